"""The model's entry in the BentoML model store: found, and intact, before anything is served.

Without this check a missing model stops `bentoml serve` with BentoML's message about a cloud
context, and a damaged file leaves a server that answers 503 for ever. Both are one line here,
saying what to run, and a non-zero exit before any worker starts (so no restart loop either).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dlops import config

IMPORT_HINT = "run `make serve` (it imports the model first) or `python import_model.py`"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    """Exit with one line saying what to run when the model is missing or damaged."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(tag)
    except NotFound:
        home = BentoMLContainer.bentoml_home.get()
        raise SystemExit(
            f"dlops: the model {tag} is not in the BentoML model store ({home}/models); "
            f"{IMPORT_HINT}, or set BENTOML_HOME to the store that holds it"
        ) from None
    problem = damage(model)
    if problem is not None:
        raise SystemExit(
            f"dlops: the stored model {model.tag} cannot be served: {problem}; import it again: "
            f"{IMPORT_HINT}"
        )
