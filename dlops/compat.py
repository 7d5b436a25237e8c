"""Every reach into a library's private parts, in one place, failing loudly when its target moved.

Each function checks that what it relies on is still there and raises :class:`LibraryMoved`
naming the library, its installed version and the version this was written for, instead of
misbehaving quietly after an upgrade. ``tests/test_compat.py`` exercises each one.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

# The releases these reach-ins were written and checked against.
WRITTEN_FOR = {"bentoml": "1.4.40", "prometheus-client": "0.26.0", "uvicorn": "0.54.0"}
# The parts of uvicorn's httptools protocol that dlops/http/guard.py's subclass extends.
HTTPTOOLS_PROTOCOL_HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)


class LibraryMoved(RuntimeError):
    """A private part dlops relies on is not where it was: check dlops/compat.py against it."""

    def __init__(self, package: str, what: str) -> None:
        super().__init__(
            f"{package} {version(package)} no longer has {what} (dlops/compat.py was written for "
            f"{package} {WRITTEN_FOR[package]}); update dlops/compat.py for this release"
        )


def histogram_counters(child: Any) -> tuple[list[Any], Any]:
    """A prometheus_client histogram child's per-bucket counters and its sum counter.

    prometheus_client offers no bulk observe; dlops tallies observations itself and adds them
    to these (one counter per bucket, not cumulative, as ``Histogram.observe`` does).
    """
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    if not isinstance(buckets, list) or not all(hasattr(b, "inc") for b in buckets):
        raise LibraryMoved("prometheus-client", "Histogram._buckets, a list of value counters")
    if not hasattr(total, "inc"):
        raise LibraryMoved("prometheus-client", "Histogram._sum, a value counter")
    return buckets, total


def bentoml_timeout_middleware() -> type:
    """BentoML's request-timeout middleware, which dlops/request_timeout.py replaces."""
    try:
        from bentoml._internal.server.http.traffic import TimeoutMiddleware
    except ImportError:
        raise LibraryMoved(
            "bentoml", "bentoml._internal.server.http.traffic.TimeoutMiddleware"
        ) from None
    return TimeoutMiddleware


def starlette_user_middleware(app: Any) -> list[Any]:
    """The middleware list of a Starlette app whose stack is not built yet, to edit in place."""
    middleware = getattr(app, "user_middleware", None)
    if not isinstance(middleware, list) or not hasattr(app, "middleware_stack"):
        raise LibraryMoved("bentoml", "a Starlette app with user_middleware from to_asgi()")
    if app.middleware_stack is not None:
        raise RuntimeError("the app's middleware stack is already built")
    return middleware


def bentoml_home() -> Path:
    """The BentoML home the model store lives under, as BentoML resolves it."""
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return Path(BentoMLContainer.bentoml_home.get())
    except (ImportError, AttributeError):
        raise LibraryMoved("bentoml", "BentoMLContainer.bentoml_home") from None


def use_uvicorn_http_protocol(import_path: str) -> None:
    """Make uvicorn's ``http="auto"`` (what BentoML's worker asks for) and ``"httptools"`` mean
    the protocol class at ``import_path`` ("module:Class"), a subclass of uvicorn's own.

    BentoML builds the worker's ``uvicorn.Config`` itself and offers no way to pass a class;
    uvicorn looks the name up in ``uvicorn.config.HTTP_PROTOCOLS`` when the config loads, after
    the service's ``to_asgi`` has run.
    """
    import uvicorn.config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    protocols = getattr(uvicorn.config, "HTTP_PROTOCOLS", None)
    if not isinstance(protocols, dict) or not {"auto", "httptools"} <= protocols.keys():
        raise LibraryMoved("uvicorn", "uvicorn.config.HTTP_PROTOCOLS with 'auto' and 'httptools'")
    missing = [hook for hook in HTTPTOOLS_PROTOCOL_HOOKS if not hasattr(HttpToolsProtocol, hook)]
    if missing:
        raise LibraryMoved("uvicorn", f"HttpToolsProtocol.{missing[0]}")
    protocols["auto"] = protocols["httptools"] = import_path


# The Swagger UI files BentoML ships inside its package; the API page (dlops/api/docs.py) serves
# them itself, from this service, so that nothing is fetched from a CDN.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def bentoml_swagger_ui_dir() -> Path:
    """The folder of BentoML's package that holds the Swagger UI files named above."""
    try:
        from bentoml._internal import server
    except ImportError:
        raise LibraryMoved("bentoml", "the package bentoml._internal.server") from None
    folder = Path(server.__file__).parent / "static_content"
    if not all((folder / name).is_file() for name in SWAGGER_UI_FILES):
        raise LibraryMoved("bentoml", f"Swagger UI's {', '.join(SWAGGER_UI_FILES)} in {folder}")
    return folder


def bentoml_openapi_document(service: Any) -> dict[str, Any]:
    """The OpenAPI document BentoML generates for ``service``, as the JSON-ready dict it serves.

    dlops/api/openapi.py corrects and completes it; BentoML's ``OpenAPISpecification`` is internal.
    """
    spec = getattr(service, "openapi_spec", None)
    if not callable(getattr(spec, "asdict", None)):
        raise LibraryMoved("bentoml", "Service.openapi_spec with asdict()")
    document = spec.asdict()
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise LibraryMoved("bentoml", "an OpenAPI document with paths from openapi_spec.asdict()")
    return document
