"""Limits on HTTP connections that uvicorn does not set: head size, header count, head timeout and
the number of connections a worker holds.

uvicorn's httptools protocol accepts a request head of any size (a 32 MiB header was read whole),
any number of headers, and a connection that sends nothing, or a byte at a time, for ever; its
keep-alive timeout only runs after a response and any byte resets it. This subclass adds:

- the request line and headers together at most ``max_head_bytes``, in at most ``max_headers``
  headers: **431** otherwise, before the app sees the request;
- the head complete within ``head_timeout`` seconds of the connection opening or of the previous
  response: an idle connection is then closed, a slow head answered **408**;
- at most ``max_connections`` open connections per worker: beyond it, the connection that has
  waited longest for its request head (idle, or sending it slowly) is closed to make room, so
  that idle connections cannot lock out the health probes; only when every connection has a
  request in progress is the new one answered **503** and closed.

Each refusal is a JSON ``{"error": ...}`` with ``Connection: close``. The request body's own time
limit is the request deadline's (dlops/http/deadline.py). ``install`` makes uvicorn use this class.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dlops import config
from dlops.compat import use_uvicorn_http_protocol
from dlops.http.deadline import past_deadline

logger = logging.getLogger(config.LOGGER_NAME)
# How often each worker looks for connections past their head timeout.
SWEEP_SECONDS = 0.5


@dataclass(frozen=True)
class HttpLimits:
    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    head_timeout: float = 10.0
    max_connections: int = 256


def http_limits() -> HttpLimits:
    """The HTTP limits from the settings."""
    return HttpLimits(
        max_head_bytes=config.MAX_HEAD_BYTES,
        max_headers=config.MAX_HEADERS,
        head_timeout=config.HEAD_TIMEOUT_SECONDS,
        max_connections=config.MAX_CONNECTIONS,
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``HttpLimits``."""

    limits = HttpLimits()  # set by install()
    # This worker's connections that await a request head, and when each must have it: in the
    # order they began waiting, so the earliest deadline comes first. One sweep a second closes
    # the late ones; a timer per request would cost every request a timer to arm and cancel.
    awaiting: ClassVar[dict[GuardedHttpToolsProtocol, float]] = {}
    sweeping: ClassVar[bool] = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn logs access when "uvicorn.access" has a handler anywhere up its tree (BentoML
        # gives the root one), and formats each line's arguments before the level discards it.
        self.access_log = self.access_log and self.access_logger.isEnabledFor(logging.INFO)
        if not GuardedHttpToolsProtocol.sweeping:
            GuardedHttpToolsProtocol.sweeping = True
            self.loop.call_later(SWEEP_SECONDS, self._sweep, self.loop)
        self._refusal: tuple[HTTPStatus, str] | None = None
        if len(self.connections) > self.limits.max_connections:
            longest_waiting = next(iter(self.awaiting), None)
            if longest_waiting is None:
                self._refuse(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"the server's {self.limits.max_connections} connections all have a request "
                    "in progress; retry shortly",
                )
                return
            longest_waiting.transport.close()
            longest_waiting._stop_awaiting_head()
        self._start_awaiting_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_awaiting_head()
        super().connection_lost(exc)

    @property
    def _awaiting_head(self) -> bool:
        return self in self.awaiting

    def _start_awaiting_head(self) -> None:
        self._received_for_head = 0  # bytes received since the head began
        self._head_size = 0  # the request line's and headers' bytes, as parsed
        self._header_count = 0
        self.awaiting.pop(self, None)  # re-inserted last: the latest deadline
        self.awaiting[self] = self.loop.time() + self.limits.head_timeout

    def _stop_awaiting_head(self) -> None:
        self.awaiting.pop(self, None)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        for connection in past_deadline(cls.awaiting, loop.time()):
            connection._head_too_slow()
        loop.call_later(SWEEP_SECONDS, cls._sweep, loop)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._awaiting_head:
            self._received_for_head += len(data)
        super().data_received(data)
        # A head still incomplete after this many bytes: one header is too long.
        incomplete = self._refusal is None and self._awaiting_head
        if incomplete and self._received_for_head > self.limits.max_head_bytes:
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._head_message())
        if self._refusal is not None:
            self._refuse(*self._refusal)

    def _head_message(self) -> str:
        return (
            f"the request line and headers exceed {self.limits.max_head_bytes:,} bytes; send "
            "shorter headers (large data belongs in the body)"
        )

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._awaiting_head:  # a pipelined request right after the previous one
            self._start_awaiting_head()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the request has more than {self.limits.max_headers} headers; send fewer",
            )
        elif self._head_size > self.limits.max_head_bytes:
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._head_message())
        if self._refusal is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_awaiting_head()
        if self._refusal is None:  # a refused request never reaches the app
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # no pipelined request left
        if idle and not self.transport.is_closing():
            self._start_awaiting_head()

    # -- refusals ------------------------------------------------------------------------------

    def _head_too_slow(self) -> None:
        self._stop_awaiting_head()
        if self.transport.is_closing():
            return
        if self._received_for_head == 0:  # idle: nothing to answer
            self.transport.close()
            return
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            f"the request's headers did not arrive within {self.limits.head_timeout:g} s; send "
            "the whole request at once",
        )

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        self._refusal = (status, message)
        self._stop_awaiting_head()
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        logger.info("connection from %s refused with %d: %s", client, status, message)
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


def install(limits: HttpLimits) -> None:
    """Make uvicorn serve HTTP/1.1 with ``GuardedHttpToolsProtocol`` and these limits."""
    GuardedHttpToolsProtocol.limits = limits
    use_uvicorn_http_protocol(f"{__name__}:{GuardedHttpToolsProtocol.__name__}")
