"""The request timeout of BentoML's own routes and mounted apps, without its memory growth.

BentoML 1.4.39's ``TimeoutMiddleware`` arms a ``loop.call_later`` timer for every request and
never cancels it, so each request's context (the Starlette request, its OpenTelemetry span,
BentoML's request context) stays alive for the whole timeout after the answer has gone: the
worker grew ~5 KiB per request, +41 % over 20 000 requests at 64 clients (`make soak`). This
middleware keeps its behaviour — a 504 JSON error if no answer has started in time, no limit
once it has — and cancels its timer as soon as the answer starts. The prediction routes
(dlops/direct_route.py) never reach either; they bound the upload instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dlops.compat import bentoml_timeout_middleware, starlette_user_middleware
from dlops.errors import send_json


class RequestTimeout:
    """504 ``{"error": ...}`` when a request has no answer after ``timeout`` seconds."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        answering = False
        deadline = asyncio.timeout(self.timeout)

        async def send_and_stop_the_clock(message: dict[str, Any]) -> None:
            nonlocal answering
            if not answering:
                answering = True
                deadline.reschedule(None)  # the answer has started: no limit on the rest
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_and_stop_the_clock)
        except TimeoutError:
            if answering or not deadline.expired():  # not our deadline's doing
                raise
            message = (
                f"the request was not answered within {self.timeout:g} s; try again, or send "
                "a smaller request"
            )
            await send_json(send, 504, {"error": message})


def replace_bentoml_timeout(app: Any) -> None:
    """Swap BentoML's TimeoutMiddleware for RequestTimeout in a Starlette app not yet started."""
    bentoml_timeout = bentoml_timeout_middleware()
    for middleware in starlette_user_middleware(app):
        if middleware.cls is bentoml_timeout:
            middleware.cls = RequestTimeout
            return
    raise RuntimeError("BentoML's app has no TimeoutMiddleware to replace (see dlops/compat.py)")
