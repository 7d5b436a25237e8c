"""The page at /ui: pick one of the models served, draw a digit (digit models) or upload, drop,
paste or photograph an image, and see the model's answer.

Plain files from ``dlops/api/static`` (HTML, CSS, JavaScript; no build step, nothing loaded from
another origin, so the page works offline), served by a small Starlette app that service.py
mounts with ``@bentoml.asgi_app(ui_app, path="/ui")``. The page posts to the chosen model's
``/models/{name}/predict`` on the same origin like any other client, so it exercises the real
API and shows its real errors.

``/ui`` reaches the page through a relative redirect to ``ui/`` (dlops/http/direct_route.py's
``RelativeRedirect``: a mount only matches below its prefix), which the page needs anyway: its
assets and ``../models/{name}/predict`` are relative URLs, so it keeps working under a path
prefix or a proxy.

``models.json`` tells the page which models the server serves, for its model picker: what ``GET
/models`` lists, and what the page needs besides. It is served here, under /ui/, because with
``API_KEY`` set /ui/ stays open (dlops/http/auth.py) while /models needs the key. ``model.json``
describes the default model alone, for clients that read only that one (dlops/pipeline/parity.py).
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dlops.pipeline.errors import ClientError

if TYPE_CHECKING:  # the arbiter imports this module, and must not import the serving code
    from dlops.pipeline.repository import Repository

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Everything the page needs comes from this service; the policy makes a stray reference to a CDN
# fail loudly in development instead of silently needing the internet. Inline scripts and styles
# are forbidden too (the uploaded image's preview is drawn on the canvas, not loaded as a URL).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Revalidate every time (cheap: StaticFiles answers 304 from its ETag), so that a new
    # release's page and script are never mixed with a cached old one.
    (b"cache-control", b"no-cache"),
]


class PageMiddleware:
    """ASGI middleware: the headers above on every response of the page, and a 405 that says what
    to do instead for any method but GET and HEAD (the generic one would point at /predict)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *PAGE_HEADERS]}
            await send(message)

        if scope["method"] not in ("GET", "HEAD"):
            refusal = JSONResponse(
                {
                    "error": f"{scope['method']} is not allowed on {scope['path']}: the page is "
                    "read with GET; images are classified by POST /predict"
                },
                status_code=HTTPStatus.METHOD_NOT_ALLOWED,
                headers={"allow": "GET, HEAD"},
            )
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def served_repository() -> Repository:
    """The worker's models (bentoml is imported here: the arbiter imports this module too)."""
    import bentoml

    return bentoml.get_current_service().repository


async def model_description(request: Request) -> JSONResponse:
    """The default model alone, as the page read it before it had a picker (dlops/pipeline/parity.py
    still does): its input kind, kind of answer and labels."""
    try:
        default = served_repository().current()
    except ClientError as error:  # the default model was unloaded (/v2/repository)
        return JSONResponse({"error": error.message}, status_code=error.error_code)
    spec = default.spec
    post = spec.postprocess
    return JSONResponse(
        {
            "name": default.name,
            "version": default.version,
            "input": "digit" if spec.preprocess.is_digit else "image",
            "binary": post.is_binary,
            "multi_label": post.is_multi_label,
            "threshold": post.threshold,
            "labels": list(post.labels),
            "top_k": post.top_k,
        }
    )


async def models_description(request: Request) -> JSONResponse:
    """Every model served, for the picker: GET /models' entries, each with the two settings
    the page needs that they leave out (the binary threshold and how many classes to rank)."""
    repository = served_repository()
    models = []
    for listed in repository.listing():
        try:
            served = repository.current(listed["name"], listed["version"])
        except ClientError:  # unloaded or reloaded since it was listed: left to the next read
            continue
        post = served.spec.postprocess
        models.append({**listed, "threshold": post.threshold, "top_k": post.top_k})
    return JSONResponse({"default": repository.default_name, "models": models})


# html=True serves index.html for "/", i.e. for /ui/ once mounted.
ui_app = Starlette(
    routes=[
        Route("/model.json", model_description),
        Route("/models.json", models_description),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="page"),
    ],
    middleware=[Middleware(PageMiddleware)],
)
