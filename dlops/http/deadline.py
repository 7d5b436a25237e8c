"""Every request answered within the request timeout, and request bodies within a memory bound.

One ASGI middleware around the whole app (BentoML's routes, the direct routes, /v2, /ui), so
that every route behaves the same:

- a request not answered within ``DLOPS_REQUEST_TIMEOUT_SECONDS`` (to within half a second)
  gets our own JSON error, and is logged: **408** while its body is still arriving (the client's
  doing: it trickled or stalled), **503** with ``Retry-After`` once the whole body is in (the
  server's doing: it was busy). Never a 504 or a hung connection. Cancelling the request stops its
  work at the next await; work on a thread stops at its next image (dlops/pipeline/core.py).
- the bytes of request bodies held at once by a worker are capped: a request reserves each
  chunk as it arrives and waits, unread (so the kernel applies backpressure to its client), while
  others hold the cap. A client that trickles its body holds only what it has sent; one request
  that already holds part of its body may pass the cap, so that bodies read halfway cannot all
  wait on each other.

It replaces BentoML's ``TimeoutMiddleware`` (removed from BentoML's stack), which answered 504
and kept every request's context alive until its timer expired.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any, TypeVar

from dlops import config
from dlops.compat import bentoml_timeout_middleware, starlette_user_middleware
from dlops.http.errors import printable, send_json
from dlops.metrics import prediction_metrics

logger = logging.getLogger(config.LOGGER_NAME)
K = TypeVar("K")


# How often each worker looks for requests past their deadline: a deadline is kept to within
# this. One sweep replaces a timer per request, whose arming and cancelling cost the digit
# model's small requests a measurable share of their throughput.
SWEEP_SECONDS = 0.5


def past_deadline(deadlines: dict[K, float], now: float) -> list[K]:
    """The keys of ``deadlines`` whose deadline is before ``now``. The dict is kept in deadline
    order (a key is (re)inserted with the latest deadline), so the walk stops at the first key
    still in time."""
    late = []
    for key, deadline in deadlines.items():
        if deadline > now:
            break
        late.append(key)
    return late


class BodyAllowance:
    """Bytes of request bodies a worker holds at once; waiters are woken as others finish.

    A request that holds part of its body and must wait for room for the rest would wait for
    ever if every holder did the same (sixteen 3 MB batches against a 20 MiB allowance, each
    read halfway). So the first such request to wait takes past the total instead, one request
    at a time: the total is exceeded by at most one body, and that request can always finish.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._overdrawn: object | None = None  # the one request allowed past the total

    def try_take(self, amount: int, holder: object | None = None) -> bool:
        # A request that holds nothing yet is let through even over the total, so that no
        # request waits for ever.
        over = self.used and self.used + amount > self.total
        if over and (holder is None or holder is not self._overdrawn):
            return False
        self.used += amount
        return True

    async def take(self, amount: int, holder: object | None = None, holding: bool = False) -> None:
        """Wait for room for ``amount`` bytes of ``holder``'s body; ``holding``: it already holds
        part of it (and may be the one request let past the total)."""
        while not self.try_take(amount, holder):
            if holding and holder is not None and self._overdrawn is None:
                self._overdrawn = holder
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)

    def give_back(self, amount: int, holder: object | None = None) -> None:
        self.used -= amount
        if holder is not None and holder is self._overdrawn:
            self._overdrawn = None
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class InFlight:
    """One request between its start and its answer: what the deadline needs to know of it."""

    __slots__ = (
        "_receive",
        "_send",
        "bodies",
        "body_complete",
        "expired",
        "held",
        "pending",
        "task",
    )

    def __init__(
        self,
        receive: Any,
        send: Any,
        bodies: BodyAllowance,
        pending: dict[InFlight, float],
    ) -> None:
        self._receive = receive
        self._send = send
        self.bodies = bodies
        self.pending = pending  # the requests not yet answering, with their deadlines
        self.task = asyncio.current_task()
        self.held = 0
        self.body_complete = False
        self.expired = False

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = len(message.get("body", b""))
            if not self.bodies.try_take(chunk, self):
                await self.bodies.take(chunk, self, holding=self.held > 0)
            self.held += chunk
            self.body_complete = not message.get("more_body", False)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        self.pending.pop(self, None)  # the answer has started: no limit on the rest
        await self._send(message)


class RequestDeadline:
    """ASGI middleware: our own 408/503 at the deadline, and bodies within ``BodyAllowance``."""

    def __init__(self, app: Any, timeout: float, body_allowance: BodyAllowance) -> None:
        self.app = app
        self.timeout = timeout
        self.bodies = body_allowance
        # In the order they started, so the earliest deadline comes first.
        self.pending: dict[InFlight, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.call_later(SWEEP_SECONDS, self._sweep)
        request = InFlight(receive, send, self.bodies, self.pending)
        self.pending[request] = self._loop.time() + self.timeout
        try:
            await self.app(scope, request.receive, request.send)
        except asyncio.CancelledError:
            if not request.expired or request.task is None:
                raise
            request.task.uncancel()  # our own cancellation, answered here
            await self._answer_late(scope, send, request.body_complete or not _has_body(scope))
        finally:
            self.pending.pop(request, None)
            if request.held:
                self.bodies.give_back(request.held, request)

    def _sweep(self) -> None:
        """Cancel the requests past their deadline that have not begun to answer."""
        assert self._loop is not None
        for request in past_deadline(self.pending, self._loop.time()):
            del self.pending[request]
            if request.task is not None:
                request.expired = True
                request.task.cancel()
        self._loop.call_later(SWEEP_SECONDS, self._sweep)

    async def _answer_late(self, scope: dict[str, Any], send: Any, body_complete: bool) -> None:
        if body_complete:
            status = HTTPStatus.SERVICE_UNAVAILABLE
            message = (
                f"the request was not answered within {self.timeout:g} s: the server is busy; "
                "retry shortly"
            )
            headers = [(b"retry-after", b"1")]
        else:
            status = HTTPStatus.REQUEST_TIMEOUT
            message = (
                f"the request body did not arrive within {self.timeout:g} s; send the whole "
                "request at once (an image needs only a few kilobytes to a few megabytes)"
            )
            headers = [(b"connection", b"close")]  # the rest of the body is never read
        logger.warning(
            "%s %s: %d after %g s (%s)",
            scope["method"],
            printable(scope["path"]),
            status,
            self.timeout,
            "body still arriving" if not body_complete else "not answered",
        )
        if scope["method"] == "POST":
            prediction_metrics().failed(status.name.lower())
        await send_json(send, status, {"error": message}, headers)


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def remove_bentoml_timeout(app: Any) -> None:
    """Take BentoML's TimeoutMiddleware out of a Starlette app not yet started: RequestDeadline,
    around the whole app, does its work."""
    bentoml_timeout = bentoml_timeout_middleware()
    middleware = starlette_user_middleware(app)
    for index, entry in enumerate(middleware):
        if entry.cls is bentoml_timeout:
            del middleware[index]
            return
    raise RuntimeError("BentoML's app has no TimeoutMiddleware to remove (see dlops/compat.py)")
