"""The model's entry in the BentoML model store: found, intact and servable before anything is.

Without this check a missing model stops `bentoml serve` with BentoML's message about a cloud
context, and a damaged file leaves a server that answers 503 for ever. Both are one line here,
saying what to run, and a non-zero exit before any worker starts (so no restart loop either).
The entry's spec.json (dlops/model/spec.py) is read and validated here too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

from dlops import config
from dlops.compat import bentoml_home
from dlops.model.spec import SpecError, StoredModel, load_spec

IMPORT_HINT = "run `make serve` (it imports the model first) or `python import_model.py`"


def file_sha256(path: Path) -> str:
    # Read in chunks: an external data file is over 2 GB by design.
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def import_hint(name: str) -> str:
    """What to run to import the model ``name`` (again)."""
    if name == config.DEFAULT_MODEL_NAME:
        return IMPORT_HINT
    return (
        f"run `python import_model.py PATH/TO/MODEL.onnx --name {name}` with the flags it was "
        "imported with"
    )


def _file_damage(path: Path, recorded: object, what: str) -> str | None:
    if not path.is_file():
        return f"{what} {path} is missing"
    actual = file_sha256(path)
    if recorded != actual:
        return (
            f"{what} {path} is damaged: sha256 {actual[:12]}… differs from the "
            f"{str(recorded)[:12]}… recorded when it was imported"
        )
    return None


def _inside_entry(name: object) -> bool:
    """A recorded external data file's name is a relative path without ``..`` (as the import
    checked it); model.yaml is not trusted to say otherwise."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    return not PurePosixPath(name).is_absolute() and ".." not in name.replace("\\", "/").split("/")


def damage(model: Any) -> str | None:
    """Why a stored model's ONNX file, or one of its external data files (recorded with their
    sha256 by import_model.py), cannot be served as imported, or None when all are intact."""
    folder = Path(model.path)
    problem = _file_damage(
        folder / config.MODEL_FILE_NAME, model.info.metadata.get("sha256"), "its file"
    )
    if problem is not None:
        return problem
    external = model.info.metadata.get("external_data") or {}
    if not isinstance(external, dict):
        return f"its external_data metadata is not a mapping of file to sha256: {external!r}"
    for name, recorded in external.items():
        if not _inside_entry(name):
            return f"its metadata names an external data file outside the entry: {name!r}"
        problem = _file_damage(folder / name, recorded, "its external data file")
        if problem is not None:
            return problem
    return None


def packed_models() -> list[str] | None:
    """The models a built Bento holds, when serving one (an image): BentoML then reads its own
    store, ``$BENTO_PATH/models``, and no other. None when serving from source."""
    bento = os.environ.get("BENTO_PATH")
    folder = Path(bento, "models") if bento else None
    if folder is None or not folder.is_dir():
        return None
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir())


class Unservable(Exception):
    """A stored model that cannot be served, and what to run about it."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def stored_model(name: str, version: str | None) -> StoredModel:
    """The model ``name`` (``version``, or the latest) from the BentoML store, checked intact,
    with its spec; Unservable saying what to run when it cannot be served."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = f"{name}:{version or 'latest'}"
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        packed = packed_models()
        if packed is not None:
            raise Unservable(
                f"the model {tag} is not in this image, which packs {', '.join(packed)}; "
                "DLOPS_MODELS can name only those: build an image that packs it with "
                "`make image MODELS=...`",
                missing=True,
            ) from None
        home = bentoml_home()
        raise Unservable(
            f"the model {tag} is not in the BentoML model store ({home}/models); "
            f"{import_hint(name)}, or set BENTOML_HOME to the store that holds it",
            missing=True,
        ) from None
    problem = damage(model)
    if problem is not None:
        raise Unservable(
            f"the stored model {model.tag} cannot be served: {problem}; import it again: "
            f"{import_hint(name)}"
        )
    path = Path(model.path)
    try:
        spec = load_spec(path)
    except SpecError as error:
        raise Unservable(
            f"the stored model {model.tag} cannot be served: its spec: {error}; import it "
            f"again: {import_hint(name)}"
        ) from None
    external = model.info.metadata.get("external_data") or {}
    size = sum((path / name).stat().st_size for name in [config.MODEL_FILE_NAME, *external])
    return StoredModel(model.tag.name, str(model.tag.version), path, spec, size_bytes=size)


def check_stored_models(models: list[tuple[str, str | None]]) -> list[str]:
    """Each model's ``name:version`` in the store, in order; exit with one line saying what to
    run when a model or its spec is unusable."""
    found = []
    for name, version in models:
        try:
            stored = stored_model(name, version)
        except Unservable as error:
            raise SystemExit(f"dlops: {error}") from None
        found.append(f"{stored.name}:{stored.version}")
    return found
