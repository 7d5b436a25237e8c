"""Models whose weights sit in external data files (ONNX over 2 GB; Optimum's model.onnx_data).

The import stores every file the graph names, under the name it expects, beside model.onnx, and
test-runs that copy; it refuses missing files and locations outside the model's folder. The
service's start-up check catches a missing or damaged external file like a damaged model.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from dlops.model.resolve import ImportRefused
from dlops.model.resolve.graph import external_data_files
from dlops.pipeline.inference import open_session
from tests.conftest import ROOT, Server, bentoml_env, run_import
from tests.test_import_model import assert_one_line_error, entry, imported, stored_model, versions
from tests.test_resolve import classifier

NAME = "orient_ext"
DATA = "model.onnx.data"


def external_model(folder: Path, location: str = DATA, *, bias: float = 0.0) -> Path:
    """A small classifier whose every initializer lives in ``location``, relative to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = classifier(folder.parent / f"{folder.name}-plain.onnx", bias=bias)
    model = onnx.load(str(plain))
    plain.unlink()
    path = folder / f"{NAME}.onnx"
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    assert (folder / location).is_file()
    return path


def relocate(path: Path, location: str) -> Path:
    """The graph at ``path`` with every external tensor pointed at ``location`` (nothing moved)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for item in tensor.external_data:
            if item.key == "location":
                item.value = location
    onnx.save(model, str(path))
    return path


def scores(path: Path) -> np.ndarray:
    session = open_session(path)
    image = np.random.default_rng(7).random((2, 3, 8, 8)).astype(np.float32)
    return np.asarray(session.run(["scores"], {"image": image})[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_stored(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from dlops.model.store import check_stored_models;"
            f"check_stored_models([('{NAME}', None)])",
        ],
        cwd=ROOT,
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def files_of(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


# --- the import stores the external data and runs from the stored copy -------------------------


@pytest.mark.parametrize("location", [DATA, "weights/orient_ext.bin"], ids=["beside", "subfolder"])
def test_the_entry_holds_the_model_and_its_external_data(tmp_path: Path, location: str) -> None:
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source, location)
    expected = scores(path)
    tag = imported(run_import(home, str(path)))
    stored = entry(home, tag)
    assert files_of(stored) == {"model.onnx", location, "model.yaml", "spec.json"}
    assert sha256(stored / location) == sha256(source / location)
    metadata = stored_model(home, tag)["metadata"]
    assert metadata["sha256"] == sha256(path)
    assert metadata["external_data"] == {location: sha256(source / location)}
    shutil.rmtree(source)  # the stored copy needs nothing of the original folder
    onnx.checker.check_model(str(stored / "model.onnx"), full_check=True)
    np.testing.assert_array_equal(scores(stored / "model.onnx"), expected)
    assert check_stored(home).returncode == 0


def test_the_trial_runs_on_the_stored_copy(tmp_path: Path) -> None:
    """A copy that lacks the external data fails its trial inside bentoml.models.create, which
    then stores nothing: the refusal of old ("imported", then a server that cannot load it)."""
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source)
    script = (
        "import shutil, sys, import_model\n"
        "copy = shutil.copyfile\n"
        "shutil.copyfile = lambda src, dst: dst if str(src).endswith('.data') else copy(src, dst)\n"
        f"sys.exit(import_model.main([{str(path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(
        result, "the copy made for the model store failed its trial", "onnxruntime cannot open it"
    )
    assert versions(home) == []


def test_a_model_without_external_data_records_none(tmp_path: Path) -> None:
    path = classifier(tmp_path / "plain.onnx")
    tag = imported(run_import(tmp_path / "home", str(path)))
    assert stored_model(tmp_path / "home", tag)["metadata"]["external_data"] == {}
    assert files_of(entry(tmp_path / "home", tag)) == {"model.onnx", "model.yaml", "spec.json"}


# --- refusals: nothing is stored ----------------------------------------------------------------


def test_a_missing_external_file_is_refused(tmp_path: Path) -> None:
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source)
    (source / DATA).unlink()
    result = run_import(home, str(path))
    assert_one_line_error(
        result, f"{path}: ", f"external data file '{DATA}' is missing", f"{source / DATA}"
    )
    assert versions(home) == []


def test_a_linked_external_file_is_refused(tmp_path: Path) -> None:
    """onnx reads no external data through a symbolic link (its checker says so less plainly)."""
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source)
    blob = tmp_path / "blobs" / "0123abcd"
    blob.parent.mkdir()
    (source / DATA).rename(blob)
    (source / DATA).symlink_to(blob)
    result = run_import(home, str(path))
    assert_one_line_error(result, f"{path}: ", f"through the symbolic link {source / DATA}")
    assert versions(home) == []


@pytest.mark.parametrize(
    "location",
    ["../outside.data", "weights/../../outside.data", "ABSOLUTE"],
    ids=["dot-dot", "dot-dot-inside", "absolute"],
)
def test_a_location_outside_the_models_folder_is_refused(tmp_path: Path, location: str) -> None:
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source)
    outside = tmp_path / "outside.data"
    shutil.move(source / DATA, outside)  # the bytes exist, where the location points
    location = str(outside) if location == "ABSOLUTE" else location
    relocate(path, location)
    result = run_import(home, str(path))
    assert_one_line_error(result, f"{path}: ", repr(location), "not a file inside the model's")
    assert versions(home) == []


def test_a_location_that_would_overwrite_the_entrys_files_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = external_model(tmp_path / "export", "spec.json")
    result = run_import(home, str(path))
    assert_one_line_error(result, "'spec.json'", "a name the model store entry uses")
    assert versions(home) == []


@pytest.mark.parametrize(
    "location",
    [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "..\\x",
        "C:\\x",
        "C:x",
        "\\\\server\\share\\x",
        "a\0b",
        "",
    ],
)
def test_untrusted_locations(tmp_path: Path, location: str) -> None:
    model = onnx.load(str(external_model(tmp_path / "export")), load_external_data=False)
    for tensor in model.graph.initializer:
        for item in tensor.external_data:
            if item.key == "location":
                item.value = location
    with pytest.raises(ImportRefused, match="not a file inside the model's folder"):
        external_data_files(model, tmp_path / "export")


def test_locations_are_listed_once_and_normalised(tmp_path: Path) -> None:
    path = external_model(tmp_path / "export")
    model = onnx.load(str(path), load_external_data=False)
    first, *_ = model.graph.initializer
    for item in first.external_data:
        if item.key == "location":
            item.value = f"./{DATA}"
    assert external_data_files(model, path.parent) == [DATA]


# --- start-up check, re-imports -----------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:-4]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"\0" * path.stat().st_size), id="zeroed"),
        pytest.param(lambda path: path.unlink(), id="deleted"),
    ],
)
def test_a_damaged_stored_external_file_stops_the_service(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    home = tmp_path / "home"
    tag = imported(run_import(home, str(external_model(tmp_path / "export"))))
    stored = entry(home, tag) / DATA
    damage(stored)
    check = check_stored(home)
    assert check.returncode == 1
    assert "Traceback" not in check.stderr
    (line,) = check.stderr.strip().splitlines()
    assert f"dlops: the stored model {tag} cannot be served: its external data file " in line
    assert str(stored) in line
    assert ("is missing" if not stored.exists() else "is damaged: sha256") in line
    assert "import_model.py" in line
    # Importing again repairs it: a new version, not "already imported, unchanged".
    repaired = imported(run_import(home, str(tmp_path / "export" / f"{NAME}.onnx")))
    assert repaired != tag
    assert check_stored(home).returncode == 0


@pytest.mark.parametrize("location", [DATA, "weights/orient_ext.bin"], ids=["beside", "subfolder"])
def test_changed_external_data_is_imported_again(tmp_path: Path, location: str) -> None:
    """The same graph (model.onnx's bytes unchanged) with other weights is another model."""
    home, source = tmp_path / "home", tmp_path / "export"
    path = external_model(source, location)
    tag = imported(run_import(home, str(path)))
    unchanged = run_import(home, str(path))
    assert unchanged.stdout.strip().splitlines()[-1] == f"already imported, unchanged: {tag}"
    graph = path.read_bytes()
    external_model(tmp_path / "other", location, bias=1.0)
    shutil.copyfile(tmp_path / "other" / location, source / location)
    assert path.read_bytes() == graph
    changed = imported(run_import(home, str(path)))
    assert changed != tag
    assert sha256(entry(home, changed) / location) == sha256(source / location)


# --- through a real server ----------------------------------------------------------------------


def test_the_server_answers_with_an_external_data_model(tmp_path: Path) -> None:
    home, source = tmp_path / "home", tmp_path / "export"
    imported(run_import(home, str(external_model(source))))
    shutil.rmtree(source)
    server = Server(home, tmp_path / "serve.log", DLOPS_MODEL_NAME=NAME)
    try:
        server.wait_ready()
        image = next((ROOT / "tests" / "fixtures" / "digits").glob("*.png")).read_bytes()
        answer = httpx.post(
            f"{server.url}/predict", files={"file": ("image.png", image)}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] in {"0", "1", "2"}  # no labels given: class indices
    finally:
        server.stop()
    assert "External data path does not exist" not in server.log()
