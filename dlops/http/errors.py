"""One place that turns every failed request into ``{"error": "..."}`` with a 4xx status.

The prediction routes answer their own errors (dlops/http/direct_route.py) from ``ClientError``
(dlops/pipeline/errors.py), each with the status it carries.
For everything else, stock BentoML 1.4.39 answers its 4xx errors as a JSON *array*
(``[{"error": ...}]``) and Starlette answers unknown routes and wrong methods in plain text; the
middleware here rewrites every such error response into one JSON object.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]

# Appended to every message about a malformed upload, so the fix is in the error itself.
HOW_TO_SEND = (
    "Send one image as the multipart/form-data field 'file' "
    "(curl -F file=@digit.png http://HOST/predict), or the raw image bytes with "
    "Content-Type image/png, image/jpeg or another image/* type."
)
BATCH_HOW_TO_SEND = (
    "Send the images as the multipart/form-data field 'file', repeated once per image "
    "(curl -F file=@one.png -F file=@two.png http://HOST/predict_batch)."
)


# Client-controlled text (paths, header values, field names) is cut to this many characters in
# a log line.
LOGGED_TEXT_LIMIT = 200


def printable(text: str, limit: int = LOGGED_TEXT_LIMIT) -> str:
    """``text`` fit for one log line: control and non-ASCII characters escaped (a client cannot
    forge a line break or a terminal sequence), and cut to ``limit`` characters."""
    shown = ascii(text[:limit])[1:-1]
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"


async def send_json(
    send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer an ASGI request with ``payload`` as JSON, from middleware outside any framework."""
    body = json.dumps(payload).encode()
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


def error_message(status: int, body: bytes, content_type: str, scope: Scope) -> str:
    """The one sentence a client sees for an error response produced anywhere in the stack."""
    if "json" in content_type:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        # BentoML wraps its 4xx bodies in a one-element list.
        if isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return payload["error"]
    method, path = scope.get("method", ""), scope.get("path", "")
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        return f"{method} is not allowed on {path}: use POST. {HOW_TO_SEND}"
    if status == HTTPStatus.NOT_FOUND:
        return (
            f"there is no endpoint at {path}: POST images to /predict; "
            "the API is described at / and /docs.json"
        )
    text = body.decode("utf-8", "replace").strip()
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return f"{phrase}: {text}" if text and text != phrase else phrase


class JsonErrorMiddleware:
    """ASGI middleware: every response with status >= 400 leaves as ``{"error": "..."}``.

    Successful responses stream through untouched; only error bodies (small) are buffered.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held_start: Message | None = None
        held_body: list[bytes] = []

        async def send_with_json_errors(message: Message) -> None:
            nonlocal held_start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held_start = message
                return
            if held_start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held_body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await send_error(held_start, b"".join(held_body))

        async def send_error(start: Message, body: bytes) -> None:
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            content_type = next(
                (v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), ""
            )
            message = error_message(start["status"], body, content_type, scope)
            payload = json.dumps({"error": message}).encode()
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": False})

        await self.app(scope, receive, send_with_json_errors)
