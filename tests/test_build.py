"""`bentoml build` packs the service with its code and records the imported model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import BENTOML, ROOT, bentoml_env


def test_bentoml_build_records_the_model_and_the_code(model_home: Path) -> None:
    result = subprocess.run(
        [str(BENTOML), "build", "--output", "tag"],
        cwd=ROOT,
        env=bentoml_env(model_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = model_home / "bentos" / name / version
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    (service,) = manifest["services"]
    assert [model["tag"].split(":")[0] for model in service["models"]] == ["binary_classifier_3"]
    assert manifest["schema"]["routes"][0]["route"] == "/predict"
    packed = {
        path.relative_to(bento / "src").as_posix()
        for path in (bento / "src").rglob("*")
        if path.is_file()
    }
    assert {
        "service.py",
        "dlops/decode.py",
        "dlops/preprocess/digit.py",
        "dlops/upload.py",
        "dlops/v2/routes.py",
    } <= packed
    assert {"dlops/static/index.html", "dlops/static/app.js"} <= packed  # the /ui page
    assert not any(
        path.startswith(("tests/", "training/", "bench/", "deploy/", "models/", ".git"))
        for path in packed
    )
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.40" in requirements
