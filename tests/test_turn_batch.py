"""Adaptive batching on the event loop, in-process: which images share a model call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from dlops.pipeline.turn_batch import MOST_IMAGES, TurnBatch


class RecordingModel:
    """A model whose row for an example is its sum; records the size of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)


def example(value: int) -> np.ndarray:
    return np.full((1, 2, 2), value, dtype=np.int64)


async def together(
    batch: TurnBatch, model: Callable[[np.ndarray], np.ndarray], values: list[int]
) -> list[np.ndarray]:
    """Every value's request made ready in the same turn, as one poll of the sockets does."""
    return await asyncio.gather(*(batch.classify(example(value), model) for value in values))


def test_images_of_one_turn_share_a_call_after_the_first() -> None:
    model = RecordingModel()
    answers = asyncio.run(together(TurnBatch(MOST_IMAGES), model, [1, 2, 3, 4, 5]))
    assert model.calls == [1, 4]
    assert [answer.tolist() for answer in answers] == [[[4 * value]] for value in [1, 2, 3, 4, 5]]


def test_after_a_turn_of_several_images_the_first_of_the_next_queues_too() -> None:
    model = RecordingModel()
    batch = TurnBatch(MOST_IMAGES)

    async def turns() -> list[np.ndarray]:
        answers = await together(batch, model, [1, 2, 3])  # [1] at once, [2, 3] at the next turn
        answers += await together(batch, model, [4, 5, 6])  # under load: all three queue
        answers += await together(batch, model, [7])  # the last turn had several: it queues
        alone = batch.classify(example(8), model)  # the last turn had one: at once
        with pytest.raises(StopIteration) as done:
            alone.send(None)
        return [*answers, done.value.value]

    answers = asyncio.run(turns())
    assert model.calls == [1, 2, 3, 1, 1]
    assert [int(answer[0, 0]) for answer in answers] == [4 * value for value in range(1, 9)]


def test_an_image_alone_is_answered_at_once_without_waiting() -> None:
    model = RecordingModel()
    batch = TurnBatch(MOST_IMAGES)

    async def one_at_a_time() -> None:
        for value in range(3):
            answer: Coroutine[Any, Any, np.ndarray] = batch.classify(example(value), model)
            with pytest.raises(StopIteration) as done:  # finished at its first step
                answer.send(None)
            assert done.value.value.tolist() == [[4 * value]]
            await asyncio.sleep(0)  # the next turn: the queue's call finds nothing queued

    asyncio.run(one_at_a_time())
    assert model.calls == [1, 1, 1]


def test_a_full_batch_runs_at_once_and_the_turn_goes_on() -> None:
    model = RecordingModel()
    answers = asyncio.run(together(TurnBatch(3), model, list(range(11))))
    assert model.calls == [1, 3, 3, 3, 1]
    assert [int(answer[0, 0]) for answer in answers] == [4 * value for value in range(11)]


def test_the_batch_is_bounded_by_the_callers_limit_and_ours() -> None:
    model = RecordingModel()
    asyncio.run(together(TurnBatch(10_000), model, list(range(2 * MOST_IMAGES + 1))))
    assert model.calls == [1, MOST_IMAGES, MOST_IMAGES]
    model.calls.clear()
    asyncio.run(together(TurnBatch(0), model, [1, 2, 3]))
    assert model.calls == [1, 1, 1]


def test_a_cancelled_image_is_not_run_and_the_others_are_answered() -> None:
    model = RecordingModel()
    batch = TurnBatch(MOST_IMAGES)

    async def scenario() -> list[Any]:
        tasks = [
            asyncio.ensure_future(batch.classify(example(value), model)) for value in (1, 2, 3)
        ]
        await asyncio.sleep(0)  # every task has run its first step: 2 and 3 are queued
        tasks[1].cancel()  # its deadline passed
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(scenario())
    assert isinstance(answers[1], asyncio.CancelledError)
    assert answers[0].tolist() == [[4]] and answers[2].tolist() == [[12]]
    assert model.calls == [1, 1]


def test_a_failed_call_reaches_every_image_of_it_and_the_next_turn_works() -> None:
    model = RecordingModel()
    failing = True

    def sometimes_failing(batch: np.ndarray) -> np.ndarray:
        if failing and len(batch) > 1:
            raise RuntimeError("the model failed")
        return model(batch)

    batch = TurnBatch(MOST_IMAGES)

    async def scenario() -> tuple[list[Any], list[np.ndarray]]:
        nonlocal failing
        first = await asyncio.gather(
            *(batch.classify(example(value), sometimes_failing) for value in (1, 2, 3)),
            return_exceptions=True,
        )
        failing = False
        return first, await together(batch, sometimes_failing, [4, 5, 6])

    first, second = asyncio.run(scenario())
    assert first[0].tolist() == [[4]]
    assert [str(error) for error in first[1:]] == ["the model failed", "the model failed"]
    assert [int(answer[0, 0]) for answer in second] == [16, 20, 24]
