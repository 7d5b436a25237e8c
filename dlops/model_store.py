"""The model's entry in the BentoML model store: found, intact and servable before anything is.

Without this check a missing model stops `bentoml serve` with BentoML's message about a cloud
context, and a damaged file leaves a server that answers 503 for ever. Both are one line here,
saying what to run, and a non-zero exit before any worker starts (so no restart loop either).
The entry's spec.json (dlops/spec.py) is read and validated here too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dlops import config
from dlops.compat import bentoml_home
from dlops.spec import SpecError, load_spec

IMPORT_HINT = "run `make serve` (it imports the model first) or `python import_model.py`"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_hint(name: str) -> str:
    """What to run to import the model ``name`` (again)."""
    if name == config.DEFAULT_MODEL_NAME:
        return IMPORT_HINT
    return (
        f"run `python import_model.py PATH/TO/MODEL.onnx --name {name}` with the flags it was "
        "imported with"
    )


def damage(model: Any) -> str | None:
    """Why a stored model's ONNX file cannot be served as imported, or None when it is intact."""
    path = Path(model.path) / config.MODEL_FILE_NAME
    if not path.is_file():
        return f"its file {path} is missing"
    recorded = model.info.metadata.get("sha256")
    actual = file_sha256(path)
    if recorded != actual:
        return (
            f"its file {path} is damaged: sha256 {actual[:12]}… differs from the "
            f"{str(recorded)[:12]}… recorded when it was imported"
        )
    return None


def check_stored_model(tag: str) -> None:
    """Exit with one line saying what to run when the model or its spec is unusable."""
    import bentoml
    from bentoml.exceptions import NotFound

    name = tag.split(":", 1)[0]
    try:
        model = bentoml.models.get(tag)
    except NotFound:
        home = bentoml_home()
        raise SystemExit(
            f"dlops: the model {tag} is not in the BentoML model store ({home}/models); "
            f"{import_hint(name)}, or set BENTOML_HOME to the store that holds it"
        ) from None
    problem = damage(model)
    if problem is not None:
        raise SystemExit(
            f"dlops: the stored model {model.tag} cannot be served: {problem}; import it again: "
            f"{import_hint(name)}"
        )
    try:
        load_spec(Path(model.path))
    except SpecError as error:
        raise SystemExit(
            f"dlops: the stored model {model.tag} cannot be served: its spec: {error}; import it "
            f"again: {import_hint(name)}"
        ) from None
