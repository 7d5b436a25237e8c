"""A stamp that lets `python import_model.py` skip, in milliseconds, an import that changes nothing.

`make serve` imports the model every time. Deciding that an import changes nothing costs ~0.7 s
(BentoML, onnx and onnxruntime imported, the graph loaded and test-run, the store read), a third
of the start. After every successful import, import_model.py records here what its decision
depended on; the next run with the same arguments from the same folder compares that, with the
standard library only, and replays the same output if nothing changed:

- the model file and every file beside it (sidecars: labels, configs, card, metrics, external
  data), by name, size and modification time; external data in a subfolder, by the names the
  entry stores it under;
- the store's record: the version ``NAME:latest`` points to, and the size and modification time
  of every file of that entry, external data included (a deleted, damaged or replaced entry
  differs);
- the importer's code (import_model.py and the modules that decide the spec), by content;
- the Python, onnx and onnxruntime releases.

Anything else, or any doubt (no stamp, an unreadable one), runs the full import, which is always
correct; a stale stamp can only cost the time saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dlops.config import MODEL_FILE_NAME
from dlops.model.spec import SPEC_FILE_NAME

MODEL_PACKAGE = Path(__file__).resolve().parent  # dlops/model: the spec and how it is decided
ROOT = MODEL_PACKAGE.parent.parent
CODE = [
    ROOT / "import_model.py",
    ROOT / "dlops" / "config.py",
    *sorted(MODEL_PACKAGE.rglob("*.py")),
]
LIBRARIES = ("onnx", "onnxruntime", "bentoml")
STAMPS = "dlops-import-stamps"  # a folder in the BentoML home, beside BentoML's own


def bentoml_home() -> Path:
    """BentoML's home as BentoML 1.4 resolves it (dlops.compat.bentoml_home asks BentoML itself,
    which costs its import): $BENTOML_HOME, else ~/bentoml."""
    home = os.environ.get("BENTOML_HOME") or os.path.join(os.path.expanduser("~"), "bentoml")
    return Path(os.path.expanduser(os.path.expandvars(home)))


def stamp_path(argv: list[str]) -> Path:
    # The same arguments mean the same import only from the same folder (relative paths).
    key = hashlib.sha256(json.dumps([os.getcwd(), argv]).encode()).hexdigest()[:32]
    return bentoml_home() / STAMPS / f"{key}.json"


def _files(folder: Path, names: list[str] | None = None) -> list[list[Any]]:
    """[name, size, mtime_ns] of the files in ``folder`` (or of ``names`` in it), sorted."""
    listed = []
    for name in sorted(names if names is not None else os.listdir(folder)):
        try:
            stat = (folder / name).stat()
        except FileNotFoundError:
            listed.append([name, None, None])
            continue
        listed.append([name, stat.st_size, stat.st_mtime_ns])
    return listed


def _entry_files(entry: Path) -> list[str]:
    """Every file of a store entry, as POSIX paths relative to it, sorted (none if it is gone).

    Besides model.onnx, model.yaml, spec.json and the card, these are the model's external data
    files, under the names its graph gives them (import_model.py stores them so)."""
    found = []
    for folder, _, names in os.walk(entry):
        relative = Path(folder).relative_to(entry)
        found += [(relative / name).as_posix() for name in names]
    return sorted(found)


def _release(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def fingerprint(model_path: Path, name: str) -> dict[str, Any] | None:
    """What an import of ``model_path`` as ``name`` depended on, or None if the store has no
    ``name:latest`` (nothing to skip to)."""
    entries = bentoml_home() / "models" / name
    folder = model_path.resolve().parent
    try:
        latest = (entries / "latest").read_text().strip()
        beside = _files(folder)
    except OSError:
        return None
    stored = _entry_files(entries / latest)
    kept = [*{MODEL_FILE_NAME, "model.yaml", SPEC_FILE_NAME, *stored}]  # named even when missing
    # The folder's listing covers external data beside the model; data in a subfolder is
    # looked at by the names the entry stores it under (the entry's own files are all at its top).
    beside += _files(folder, [name for name in stored if "/" in name])
    code = hashlib.sha256()
    for path in CODE:
        code.update(path.read_bytes())
    return {
        "model": str(model_path.resolve()),
        "beside": beside,
        "latest": latest,
        "entry": _files(entries / latest, kept),
        "code": code.hexdigest(),
        "python": sys.version,
        "libraries": [_release(package) for package in LIBRARIES],
    }


def record(argv: list[str], model_path: Path, name: str, output: list[str]) -> None:
    """After a successful import: remember it, and what it printed (best effort)."""
    state = fingerprint(model_path, name)
    if state is None:
        return
    path = stamp_path(argv)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"name": name, "state": state, "output": output}))
        temporary.replace(path)  # atomic: a concurrent run reads the old stamp or the new one
    except OSError:
        pass  # a read-only home: every run takes the full path, as before


def unchanged(argv: list[str]) -> list[str] | None:
    """The output of the recorded import with these arguments, if it would change nothing."""
    try:
        stamp = json.loads(stamp_path(argv).read_text())
        current = fingerprint(Path(stamp["state"]["model"]), stamp["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stamp["output"] if current == stamp["state"] else None
