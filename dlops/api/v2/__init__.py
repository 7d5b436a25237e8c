"""The Open Inference Protocol (KServe V2 REST): ``codec`` (the wire format, for any model) and
``routes`` (the Starlette ``app`` that answers it for the served model, over
dlops/pipeline/core.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    app: Starlette

__all__ = ["app", "infer_route_of"]
INFER_ROUTE = "/v2/models/{name}/infer"
VERSION_INFER_ROUTE = "/v2/models/{name}/versions/{version}/infer"


def infer_route_of(path: str) -> str | None:
    """The inference route ``path`` is one of (as metrics name it), or None: the service answers
    these straight from ASGI, as it answers /predict (dlops/http/direct_route.py)."""
    segments = path.split("/")
    if segments[:3] != ["", "v2", "models"] or segments[-1] != "infer":
        return None
    if len(segments) == 5 and segments[3]:
        return INFER_ROUTE
    if len(segments) == 7 and segments[4] == "versions" and segments[3] and segments[5]:
        return VERSION_INFER_ROUTE
    return None


def __getattr__(name: str) -> Any:
    # Imported on first use, so that the codec (and its unit tests) load without BentoML.
    if name == "app":
        from dlops.api.v2.routes import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
