"""dlops/http/deadline.py in-process: the request deadline and the body allowance, on a plain ASGI
app.

The HTTP tests (test_hostile.py, test_http.py) prove the wiring against a real server; these pin
the behaviour itself, without a server's timing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dlops.http.deadline import BodyAllowance, RequestDeadline

SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [(b"content-length", b"10")],
}


class Exchange:
    """One request's messages: what the client sends, what the server answered."""

    def __init__(self, chunks: list[bytes], complete: bool = True) -> None:
        """``complete``: the last chunk ends the body; otherwise the client stalls after it."""
        self.incoming = [
            {
                "type": "http.request",
                "body": chunk,
                "more_body": not complete or index < len(chunks) - 1,
            }
            for index, chunk in enumerate(chunks)
        ]
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        await asyncio.Event().wait()  # a client that stalls
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def error(self) -> str:
        return str(json.loads(self.sent[1]["body"])["error"])


async def reads_everything_then_hangs(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await asyncio.Event().wait()  # work that outlasts the deadline


async def answers_at_once(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(1.2)  # past the deadline, but the answer has begun
    await send({"type": "http.response.body", "body": b"{}"})


def serve(app: Any, exchange: Exchange, allowance: BodyAllowance | None = None) -> None:
    middleware = RequestDeadline(app, 0.3, allowance or BodyAllowance(100))
    asyncio.run(middleware(SCOPE, exchange.receive, exchange.send))


def test_a_body_still_arriving_at_the_deadline_gets_408() -> None:
    exchange = Exchange([b"01234", b"5"], complete=False)
    serve(reads_everything_then_hangs, exchange)
    assert exchange.status == 408 and "did not arrive within 0.3 s" in exchange.error
    assert (b"connection", b"close") in exchange.sent[0]["headers"]


def test_work_past_the_deadline_gets_503_with_retry_after() -> None:
    exchange = Exchange([b"0123456789"])
    serve(reads_everything_then_hangs, exchange)
    assert exchange.status == 503 and "not answered within 0.3 s" in exchange.error
    assert (b"retry-after", b"1") in exchange.sent[0]["headers"]


def test_an_answer_that_has_begun_is_not_cut_off() -> None:
    exchange = Exchange([b"0123456789"])
    serve(answers_at_once, exchange)
    assert exchange.status == 200 and exchange.sent[1]["body"] == b"{}"


def test_bodies_wait_for_room_in_the_allowance_and_give_it_back() -> None:
    async def scenario() -> list[str]:
        allowance = BodyAllowance(10)
        events: list[str] = []
        await allowance.take(8)

        async def second() -> None:
            await allowance.take(5)
            events.append("second taken")

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.05)
        events.append("first given back")
        allowance.give_back(8)
        await waiting
        assert allowance.used == 5
        return events

    assert asyncio.run(scenario()) == ["first given back", "second taken"]


def test_a_chunk_larger_than_the_allowance_passes_when_nothing_is_held() -> None:
    allowance = BodyAllowance(10)
    assert allowance.try_take(50) and not allowance.try_take(1)


def test_a_finished_request_gives_its_body_back() -> None:
    allowance = BodyAllowance(100)
    exchange = Exchange([b"0123456789"])
    serve(answers_at_once, exchange, allowance)
    assert exchange.status == 200 and allowance.used == 0


def test_bodies_read_halfway_cannot_all_wait_on_each_other() -> None:
    """Four 60-byte bodies in 10-byte chunks against an allowance of 100: after the first
    chunks, each holds part of its body and waits for room. One of them passes the total, ends,
    gives its body back, and so on: all four are answered, none at the deadline."""

    async def scenario() -> list[int]:
        allowance = BodyAllowance(100)
        middleware = RequestDeadline(answers_when_read, 5.0, allowance)
        exchanges = [Exchange([b"0123456789"] * 6) for _ in range(4)]
        await asyncio.wait_for(
            asyncio.gather(
                *(middleware(SCOPE, exchange.receive, exchange.send) for exchange in exchanges)
            ),
            timeout=2.0,
        )
        assert allowance.used == 0
        return [exchange.status for exchange in exchanges]

    assert asyncio.run(scenario()) == [200, 200, 200, 200]


def test_only_one_request_at_a_time_passes_the_total() -> None:
    async def scenario() -> None:
        allowance = BodyAllowance(10)
        first, second = object(), object()
        await allowance.take(6, first)
        await allowance.take(4, second)
        await allowance.take(5, first, holding=True)  # past the total: first is let through
        assert allowance.used == 15
        waiting = asyncio.create_task(allowance.take(5, second, holding=True))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # first is already past the total
        allowance.give_back(11, first)
        await waiting
        assert allowance.used == 9

    asyncio.run(scenario())


async def answers_when_read(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        await asyncio.sleep(0)  # the other requests' chunks arrive in between
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})
