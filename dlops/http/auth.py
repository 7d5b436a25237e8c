"""The optional API key: with API_KEY set, every request needs it except the open paths below.

Deny by default, so that an inference endpoint added later (a BentoML API, a mounted app, a
task's GET /get) is protected without anyone remembering to list it. Open: health and readiness
probes (platforms call them without credentials), /metrics (scrapers), the API documentation
and the /ui page's files (the page asks for the key when the API answers 401).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from dlops import config
from dlops.http.errors import printable, send_json
from dlops.metrics import prediction_metrics

logger = logging.getLogger(config.LOGGER_NAME)

OPEN_PATHS = frozenset(
    [
        "/livez",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
        "/",
        "/docs",
        "/docs.json",
        "/openapi.json",
        "/schema.json",
        "/ui",
    ]
)
OPEN_PREFIXES = ("/ui/", "/docs/static/", "/static_content/", "/assets/")
OPEN_METHODS = frozenset(["GET", "HEAD"])

HOW_TO_AUTHENTICATE = (
    "send the key as the header 'Authorization: Bearer <key>' (or 'X-API-Key: <key>'), e.g. "
    "curl -H 'Authorization: Bearer <key>' -F file=@digit.png http://HOST/predict"
)


def is_open(method: str, path: str) -> bool:
    return method in OPEN_METHODS and (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key from 'Authorization: Bearer <key>' or 'X-API-Key: <key>', if either is there."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
        elif name == b"x-api-key":
            return value.strip()
    return None


class ApiKeyGate:
    """ASGI middleware answering 401 ``{"error": ...}`` to requests without the right key."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or is_open(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        # compare_digest takes as long for a wrong key as for a right one of the same length, so
        # response times do not reveal how much of a guess was right.
        if key is not None and hmac.compare_digest(key, self.api_key):
            await self.app(scope, receive, send)
            return
        if key is None:
            message = f"{scope['path']} needs an API key: {HOW_TO_AUTHENTICATE}"
        else:
            message = f"the API key sent is not valid for {scope['path']}: {HOW_TO_AUTHENTICATE}"
        logger.info(
            "%s %s: client error 401: no valid API key", scope["method"], printable(scope["path"])
        )
        prediction_metrics().failed("unauthorized")
        await send_json(
            send, 401, {"error": message}, [(b"www-authenticate", b'Bearer realm="dlops"')]
        )
