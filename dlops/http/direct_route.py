"""Serving the prediction routes straight from ASGI, without BentoML's per-request dispatch.

Measured on 2 cores (py-spy under hey, 16 clients): BentoML 1.4.39's path for an API call —
its middleware stack (request metrics in multiprocess mode, OpenTelemetry, access log, timeout),
routing, ``APIMethod.__get__`` (``inspect.signature`` on every call), pydantic IO models, the
thread-pool hop — cost several times more than decoding, preprocessing and inference together,
and held the service to ~0.35x the seed FastAPI app's throughput.

``DirectRouteService`` is a ``bentoml.Service`` (``@bentoml.service(service_class=...)``) whose
ASGI app first checks for ``POST`` on a route marked with ``@direct_route``: such a request is
read by the route's reader, answered by one plain method of the service instance and counted in
``dlops_*`` metrics. Everything else — health, readiness, metrics, the Swagger UI, errors — is
BentoML's own app, unchanged.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any, Protocol, TypeVar

import bentoml
from starlette.requests import Request

from dlops import config
from dlops.http.auth import ApiKeyGate
from dlops.http.deadline import BodyAllowance, RequestDeadline, remove_bentoml_timeout
from dlops.http.drain import GracefulDrain
from dlops.http.errors import printable, send_json
from dlops.http.guard import http_limits
from dlops.http.guard import install as install_http_limits
from dlops.http.upload import requested_top_k
from dlops.metrics import FlushBeforeScrape, prediction_metrics, route_metrics
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import ModelNotReady

logger = logging.getLogger(config.LOGGER_NAME)
F = TypeVar("F", bound=Callable[..., Any])
Reader = Callable[[Request], Awaitable[Any]]

JSON_HEADERS = [(b"content-type", b"application/json")]


# The one path parameter a direct route may have: a model's name, as a whole segment.
MODEL_PARAMETER = "{model}"


def direct_route(path: str, read: Reader) -> Callable[[F], F]:
    """Mark a service method to answer ``POST path`` with ``await method(upload, top_k)``.

    ``upload`` is ``await read(request)``, ``top_k`` the query's ``?top_k=N`` (None if absent).
    A path with a ``{model}`` segment passes that segment as ``model=``. The method returns what
    the JSON body should hold; ``ClientError`` becomes its 4xx answer. A method may be marked
    for several paths.
    """

    def mark(method: F) -> F:
        marked = getattr(method, "__direct_routes__", [])
        method.__direct_routes__ = [*marked, (path, read)]  # type: ignore[attr-defined]
        return method

    return mark


class DirectRouteService(bentoml.Service):  # type: ignore[type-arg]
    """A ``bentoml.Service`` whose ASGI app answers its direct routes before BentoML's stack.

    With ``API_KEY`` set, the key is checked before either (dlops/http/auth.py); SIGTERM drains the
    worker's connections before it stops (dlops/http/drain.py).
    """

    @property
    def doc(self) -> str:
        """The API's description on the Swagger page at /: the service class's docstring.

        BentoML shows a boilerplate text when serving from source and the whole README in a
        built Bento; the docstring is short, the same everywhere, and links the page at /ui.
        """
        return inspect.getdoc(self.inner) or super().doc

    def to_asgi(self, is_main: bool = True) -> Any:
        install_http_limits(http_limits())  # uvicorn's protocol: before its config loads
        app = super().to_asgi(is_main)
        remove_bentoml_timeout(app)  # RequestDeadline, below, bounds every route's time
        if is_main:
            app = self.api_page(app)
        # Inside the direct routes: a prediction passes no layer that is not its own.
        app = FlushBeforeScrape(app)
        app = RelativeRedirect(app, "/ui", "ui/")
        routes = {}
        for name in dir(self.inner):
            for path, read in getattr(getattr(self.inner, name), "__direct_routes__", []):
                routes[path] = DirectRoute(path, read, handler=name)
        # Mounted apps that answer some POSTs straight (the Open Inference Protocol's infer).
        apps = [mounted for mounted, _, _ in self.mount_apps if hasattr(mounted, "direct_route_of")]
        app = DirectRoutes(app, routes, apps)
        if config.API_KEY is not None:  # before the routes: nothing is read without the key
            app = ApiKeyGate(app, config.API_KEY)
        app = RequestDeadline(
            app, config.REQUEST_TIMEOUT_SECONDS, BodyAllowance(config.BODY_ALLOWANCE_BYTES)
        )
        return GracefulDrain(app)

    def api_page(self, app: Any) -> Any:
        """The main app with its API page: BentoML's own here; dlops/api/docs.py's
        ``DocumentedService`` puts dlops' page in front."""
        return app


class DirectRoute:
    """``POST path`` → ``await service_instance.<handler>(await read(request), top_k)``."""

    def __init__(self, path: str, read: Reader, handler: str) -> None:
        self.path = path
        self.read = read
        self.handler = handler
        # The service instance and its handler, once the service is up: `bentoml.` attributes
        # resolve through a module __getattr__ (an import_module call) on every access.
        self._service: Any = None
        self._bound: Callable[..., Awaitable[Any]] | None = None

    async def __call__(
        self, scope: dict[str, Any], receive: Any, send: Any, model: str | None = None
    ) -> None:
        started = time.perf_counter()
        status, payload, headers = await self.answer(Request(scope, receive), model)
        body = json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
        answered(scope, self.path, status, len(body), started)

    async def answer(
        self, request: Request, model: str | None
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        handler = self._bound
        if handler is None:
            self._service = bentoml.get_current_service()
            handler = self._bound = getattr(self._service, self.handler)
        service = self._service
        try:
            # Most requests carry no query: parsing an empty one would cost a few µs each.
            query = request.scope.get("query_string")
            top_k = requested_top_k(request.query_params.get("top_k")) if query else None
            if model is None:
                result = await handler(await self.read(request), top_k)
            else:
                result = await handler(await self.read(request), top_k, model)
        except ClientError as error:
            logger.info(
                "%s: client error %d: %s",
                printable(request.url.path),
                error.error_code,
                printable(error.message),
            )
            if not error.counted:  # the core counts the images it refuses
                metrics_of(service, model).failed(error.kind)
            return error.error_code, {"error": error.message}, []
        except ModelNotReady as error:
            metrics_of(service, model).failed("model_not_ready")
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": f"{error}; retry shortly"},
                [(b"retry-after", b"1")],
            )
        except Exception:  # a bug of ours: logged with its traceback, answered as JSON anyway
            logger.exception("%s: unexpected error", printable(request.url.path))
            metrics_of(service, model).failed("internal_error")
            return (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "the server failed to process this request (a bug, now in its log)"},
                [],
            )
        return HTTPStatus.OK, result, []


def answered(scope: dict[str, Any], path: str, status: int, size: int, started: float) -> None:
    """Count a request a direct route or app answered (``path``: the route, as metrics name it),
    and log it when the access log is on."""
    seconds = time.perf_counter() - started
    route_metrics().observe(path, status, seconds)
    if config.ACCESS_LOG:
        client = scope.get("client") or ("-", 0)
        logger.info(
            "%s:%s POST %s %d %d bytes %.1f ms",
            client[0],
            client[1],
            path,
            status,
            size,
            seconds * 1000,
        )


class DirectApp(Protocol):
    """A mounted ASGI app that answers some POSTs straight, as the direct routes are answered:
    ``direct_route_of(path)`` is the route (as metrics name it) a path is, or None."""

    def direct_route_of(self, path: str) -> str | None: ...

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None: ...


async def answer_straight(
    app: DirectApp, route: str, scope: dict[str, Any], receive: Any, send: Any
) -> None:
    started = time.perf_counter()
    status, size = 500, 0

    async def counted(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            size += len(message.get("body", b""))
        await send(message)

    await app(scope, receive, counted)
    answered(scope, route, status, size, started)


def metrics_of(service: Any, model: str | None) -> Any:
    """The prediction metrics of the model a request was for: named in its path, else the
    default; a name no model has is counted as "" (the label stays bounded)."""
    repository = service.repository
    name = repository.default_name if model is None else model
    return prediction_metrics(name if name in repository.names else "")


class DirectRoutes:
    """ASGI middleware: ``POST`` to a direct route's path is that route's, or a direct app's
    when it says the path is one of its routes; the rest, ``app``'s.

    ``/models/NAME/rest`` matches the route ``/models/{model}/rest``, with ``model=NAME``.
    """

    def __init__(
        self, app: Any, routes: dict[str, DirectRoute], apps: Sequence[DirectApp] = ()
    ) -> None:
        self.app = app
        self.routes = routes
        self.apps = apps

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = self.routes.get(path) if scope["method"] == "POST" else None
        if route is not None:
            await route(scope, receive, send)
            return
        segments = path.split("/")
        if len(segments) == 4 and segments[1] == "models" and segments[2]:
            route = self.routes.get("/".join([*segments[:2], MODEL_PARAMETER, segments[3]]))
            if route is not None and scope["method"] != "POST":
                # BentoML knows no such path: its answer would be a 404.
                await method_not_allowed(scope, send)
                return
            if route is not None:
                await route(scope, receive, send, model=segments[2])
                return
        if scope["method"] == "POST":
            for app in self.apps:
                straight = app.direct_route_of(path)
                if straight is not None:
                    await answer_straight(app, straight, scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def method_not_allowed(scope: dict[str, Any], send: Any) -> None:
    message = f"{scope['method']} is not allowed on {printable(scope['path'])}: use POST"
    await send_json(send, HTTPStatus.METHOD_NOT_ALLOWED, {"error": message}, [(b"allow", b"POST")])


class RelativeRedirect:
    """ASGI middleware: ``GET path`` redirects to ``location``, a URL relative to it.

    Starlette's own slash redirect (``/ui`` -> ``/ui/``) writes an absolute URL from the
    request's ``Host`` header, which the client controls; a relative one needs no host, and
    keeps the scheme and any path prefix a proxy added.
    """

    def __init__(self, app: Any, path: str, location: str) -> None:
        self.app = app
        self.path = path
        self.headers = [(b"location", location.encode()), (b"content-length", b"0")]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        is_page_request = scope["type"] == "http" and scope["path"] == self.path
        if is_page_request and scope["method"] in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 307, "headers": self.headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)
