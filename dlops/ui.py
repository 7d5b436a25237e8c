"""The page at /ui: draw a digit (digit models) or upload, drop, paste or photograph an image,
and see the model's answer.

Plain files from ``dlops/static`` (HTML, CSS, JavaScript; no build step, nothing loaded from
another origin, so the page works offline), served by a small Starlette app that service.py
mounts with ``@bentoml.asgi_app(ui_app, path="/ui")``. The page posts to ``/predict`` on the same
origin like any other client, so it exercises the real API and shows its real errors.

``/ui`` reaches the page through a relative redirect to ``ui/`` (dlops/direct_route.py's
``RelativeRedirect``: a mount only matches below its prefix), which the page needs anyway: its
assets and ``../predict`` are relative URLs, so it keeps working under a path prefix or a
proxy. ``model.json`` tells the page which model
it serves: its name, labels and whether it takes drawn digits.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

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


async def model_description(request: Request) -> JSONResponse:
    """What the page adapts to: the drawing pad for digit models, upload for the others."""
    import bentoml

    default = bentoml.get_current_service().repository.current()
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


# html=True serves index.html for "/", i.e. for /ui/ once mounted.
ui_app = Starlette(
    routes=[
        Route("/model.json", model_description),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="page"),
    ],
    middleware=[Middleware(PageMiddleware)],
)
