"""Images that arrive together share one model call: adaptive batching that never waits.

Under load the event loop finds several requests ready at once (one poll of the sockets brings
them all) and runs their tasks one after another in one turn of the loop. Those images queue,
and one model call at the start of the next turn answers them all. There is no timer: a queued
image waits only for the images queued with it. When the last turn that brought images brought
one at most (the server is not under load), the first image of a turn is answered at once, as
it would be alone, and only the others of its turn queue: an image that arrives alone never
waits (but the first after a burst, once). Serving the digit model at 16 and 64 clients, this is
what brings dlops' throughput level with the lean floor's (docs/performance.md).

Only for work that runs on the event loop (small images, a fast model); the caller makes sure
that a batch's answers are each image's own, bit for bit (``Warmth.batches_alike``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

# The most images one model call takes: each is queued work that holds the loop while it runs.
MOST_IMAGES = 64


Run = Callable[[np.ndarray], np.ndarray]


class TurnBatch:
    """``await classify(example, run)``: ``run(batch)`` on this example alone, or with the other
    examples of the same turn of the event loop.

    ``run`` takes a batch of examples [N, ...] and gives their rows [N, K]: the same model's for
    every call. It is passed with each image rather than kept, so that nothing here holds its
    owner (a model's core) once the turn is over; ``most_images`` is the largest batch it may be
    given (at least 1).
    """

    def __init__(self, most_images: int) -> None:
        self._most = max(1, min(most_images, MOST_IMAGES))
        # The examples queued in this turn, with their answers to come; None until the first
        # image of the turn comes (it schedules the call that runs the queue).
        self._queued: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] | None = None
        self._images = 0  # in this turn, queued or not
        # The last turn that brought images brought several: the next first one queues too.
        self._busy = False

    async def classify(self, example: np.ndarray, run: Run) -> np.ndarray:
        """``example``: one image as a batch of one, [1, ...] -> its row, [1, K]."""
        loop = asyncio.get_running_loop()
        if self._queued is None:  # the first image of this turn
            self._queued = []
            self._images = 1
            loop.call_soon(self._run_queued, run)
            if not self._busy:
                return run(example)
        else:
            self._images += 1
        answer: asyncio.Future[np.ndarray] = loop.create_future()
        self._queued.append((example, answer))
        if len(self._queued) >= self._most:
            queued, self._queued = self._queued, []
            _answer(queued, run)
        return await answer

    def _run_queued(self, run: Run) -> None:
        """The next turn has begun: the queue's images, in one call."""
        queued, self._queued = self._queued, None
        self._busy = self._images > 1
        if queued:
            _answer(queued, run)


def _answer(queued: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], run: Run) -> None:
    waiting = [(example, answer) for example, answer in queued if not answer.done()]
    if not waiting:  # every one was cancelled (its deadline passed)
        return
    try:
        rows = run(np.concatenate([example for example, _ in waiting]))
    except BaseException as error:  # every waiter gets it: none is left hanging
        for _, answer in waiting:
            if not answer.done():
                answer.set_exception(error)
        if not isinstance(error, Exception):
            raise
        return
    for index, (_, answer) in enumerate(waiting):
        if not answer.done():
            answer.set_result(rows[index : index + 1])
