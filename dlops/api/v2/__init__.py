"""The Open Inference Protocol (KServe V2 REST): ``codec`` (the wire format, for any model) and
``routes`` (the Starlette ``app`` that answers it for the served model, over
dlops/pipeline/core.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    app: Starlette

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the codec (and its unit tests) load without BentoML.
    if name == "app":
        from dlops.api.v2.routes import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
