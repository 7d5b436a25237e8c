"""The unchanged-import fast path of import_model.py (dlops/model/import_stamp.py): taken when
nothing changed, and never when the model, a file beside it, the arguments or the stored entry did.

Whether the full import ran is read from ``python -X importtime``: the full path imports
onnxruntime (to test-run the graph), the fast path imports neither it nor BentoML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import DIGITS_10_MODEL, MODEL, ROOT, bentoml_env
from tests.test_import_model import entry, imported, versions


def run(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """The import's result, and whether it took the full path (imported onnxruntime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "import_model.py"), *args],
        cwd=ROOT,
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, "| onnxruntime\n" in result.stderr or " onnxruntime\n" in result.stderr


def model_copy(folder: Path) -> Path:
    """The reference model and its sidecars in a folder of the test's own, to change at will."""
    folder.mkdir()
    for sidecar in MODEL.parent.glob(f"{MODEL.stem}.*"):
        shutil.copy2(sidecar, folder / sidecar.name)
    return folder / MODEL.name


def test_an_unchanged_model_is_not_imported_again_and_prints_the_same(tmp_path: Path) -> None:
    home, model = tmp_path / "home", model_copy(tmp_path / "models")
    first, full = run(home, str(model))
    assert full
    tag = imported(first)
    second, full = run(home, str(model))
    assert not full
    assert "bentoml" not in second.stderr  # not even BentoML is imported
    lines = second.stdout.strip().splitlines()
    assert lines[-1] == f"already imported, unchanged: {tag}"
    assert lines[:-1] == first.stdout.strip().splitlines()[:-1]  # the spec table and notes
    assert len(versions(home)) == 1


def test_a_changed_sidecar_or_other_flags_take_the_full_import(tmp_path: Path) -> None:
    home, model = tmp_path / "home", model_copy(tmp_path / "models")
    tag = imported(run(home, str(model))[0])
    labels = model.with_name(f"{MODEL.stem}.labels.txt")
    labels.write_text("not three\nthree\n")
    changed, full = run(home, str(model))
    assert full
    assert imported(changed) != tag  # new labels: a new version
    flagged, full = run(home, str(model), "--threshold", "0.7")
    assert full and imported(flagged)
    again, full = run(home, str(model), "--threshold", "0.7")
    assert not full and again.stdout.strip().endswith(f"unchanged: {imported(flagged)}")


def test_another_model_at_the_same_path_is_imported(tmp_path: Path) -> None:
    home, model = tmp_path / "home", tmp_path / "model.onnx"
    shutil.copyfile(MODEL, model)
    tag = imported(run(home, str(model))[0])
    shutil.copyfile(DIGITS_10_MODEL, model)
    replaced, full = run(home, str(model))
    assert full
    assert imported(replaced) != tag
    assert re.search(r"^postprocess\.classes +10 ", replaced.stdout, re.MULTILINE)


def test_a_damaged_or_removed_entry_is_imported_again(tmp_path: Path) -> None:
    home, model = tmp_path / "home", model_copy(tmp_path / "models")
    tag = imported(run(home, str(model))[0])
    stored = entry(home, tag) / "model.onnx"
    stored.write_bytes(stored.read_bytes()[:-10])
    repaired, full = run(home, str(model))
    assert full and imported(repaired) != tag
    shutil.rmtree(home / "models")
    restored, full = run(home, str(model))
    assert full and imported(restored)
