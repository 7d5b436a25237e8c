"""bench/ablation.py: every part it takes out still exists where it takes it out, and one short
run measures every subject on the served app, whose answers stay the digit's but for the part
that changes them (the postprocessing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.ablation import _replace, subjects

ROOT = Path(__file__).resolve().parent.parent


def test_a_part_whose_target_moved_fails_instead_of_saving_nothing() -> None:
    owner = SimpleNamespace(present=1)
    _replace(owner, "present", 2)
    assert owner.present == 2
    with pytest.raises(AttributeError, match="'absent' to take out"):
        _replace(owner, "absent", 3)


def test_a_short_run_measures_every_subject(tmp_path: Path) -> None:
    argv = ["--rounds", "1", "--requests", "50", "--repeats", "1", "--output", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "bench.ablation", *argv], cwd=ROOT, check=True, timeout=300
    )
    data = json.loads((tmp_path / "ablation.json").read_text())
    assert set(data["us_per_request"]) == set(subjects())
    assert all(value > 0 for value in data["us_per_request"].values())
    for subject, answer in data["answers"].items():
        if subject in ("postprocessing", "all of them"):  # the model's logit, not a probability
            assert json.loads(answer)["proba"] > 1
        else:
            assert json.loads(answer)["label"] == "3", subject
    report = (tmp_path / "ablation.md").read_text()
    assert "without the request deadline" in report and "**lean**" in report
