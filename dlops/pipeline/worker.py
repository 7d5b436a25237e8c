"""What one worker process shares between the models it serves: threads and memory.

Every model's request core (dlops/pipeline/core.py) runs its heavy work on the same threads, within
the same memory budget: the resident memory the worker may reach (DLOPS_MAX_WORKER_MEMORY), less
what it held before any model (its baseline), what the loaded models hold (measured as each loads)
and the request bodies it may hold. No serving framework here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http import HTTPStatus
from typing import TypeVar

from dlops.pipeline.errors import ClientError
from dlops.pipeline.memory import MIB, Allocator, MemoryBudget, OverBudget, resident_bytes

T = TypeVar("T")
# Work this small runs without a reservation: it fits in any budget's slack.
UNRESERVED_BYTES = 4 * MIB
# After work that held this much, freed memory is handed back to the system, when the worker
# then holds more than RETAINED_BYTES above what it held at rest or after the last hand-back:
# the next photos reuse what the last ones freed (handing it back after every one cost a photo's
# worth of page faults per request, half the orientation model's throughput), and a burst is
# still given back.
TRIM_AFTER_BYTES = 16 * MIB
RETAINED_BYTES = 64 * MIB
# The budget for requests' work never drops below this: a model that would leave less is not
# loaded.
MIN_BUDGET_BYTES = 64 * MIB


class Worker:
    """The threads and the memory budget of one worker process, shared by its models."""

    def __init__(
        self, max_memory: int, body_memory: int, threads: int, return_memory: bool = True
    ) -> None:
        self.max_memory = max_memory
        self.body_memory = body_memory
        self.baseline = resident_bytes()  # before any model
        self.models_bytes = 0
        self.budget = MemoryBudget(self._spare(0))
        self._threads = ThreadPoolExecutor(threads, "dlops-work")
        self._allocator = Allocator() if return_memory else None
        self._trim_above = self.baseline + RETAINED_BYTES  # resident bytes past which to trim

    def _spare(self, models_bytes: int) -> int:
        return self.max_memory - self.baseline - self.body_memory - models_bytes

    def room_for(self, models_bytes: int, model_bytes: int, per_image: int) -> str | None:
        """Why a model of ``model_bytes`` does not fit, with the figures, or None when it does:
        with it the models would hold ``models_bytes``, and that must leave MIN_BUDGET_BYTES
        for requests' work and room for one image's activations (``per_image``)."""
        spare = self._spare(models_bytes)
        if per_image > spare:
            return (
                f"one image takes {per_image / MIB:,.0f} MiB of working memory while it runs, "
                f"more than the {max(spare, 0) / MIB:,.0f} MiB the worker would have left within "
                f"its {self.max_memory / MIB:,.0f} MiB (DLOPS_MAX_WORKER_MEMORY)"
            )
        if spare >= MIN_BUDGET_BYTES:
            return None
        return (
            f"it takes {model_bytes / MIB:,.0f} MiB resident; with it the models would hold "
            f"{models_bytes / MIB:,.0f} MiB, the worker {self.baseline / MIB:,.0f} MiB before any "
            f"model and request bodies up to {self.body_memory / MIB:,.0f} MiB, leaving less than "
            f"{MIN_BUDGET_BYTES / MIB:,.0f} MiB for requests within the worker's "
            f"{self.max_memory / MIB:,.0f} MiB (DLOPS_MAX_WORKER_MEMORY)"
        )

    def describe(self) -> dict[str, float]:
        """This worker's memory, in MiB, as GET /models shows it."""
        figures = {
            "pid": os.getpid(),
            "limit_mib": self.max_memory,
            "before_any_model_mib": self.baseline,
            "models_mib": self.models_bytes,
            "request_bodies_mib": self.body_memory,
            "requests_work_mib": self.budget.total,
            "resident_now_mib": resident_bytes(),
        }
        return {
            key: value if key == "pid" else round(value / MIB, 1) for key, value in figures.items()
        }

    def set_models_bytes(self, models_bytes: int) -> None:
        """The loaded models now hold ``models_bytes``: the requests' budget is what is left."""
        self.models_bytes = models_bytes
        self.budget.resize(max(self._spare(models_bytes), MIN_BUDGET_BYTES))
        self._trim_above = max(self._trim_above, self.baseline + models_bytes + RETAINED_BYTES)

    async def off_loop(self, work: Callable[[threading.Event], T]) -> T:
        """``work(abandoned)`` on a worker thread; ``abandoned`` is set if the caller gives up.

        A cancelled caller returns at once; work not yet started never starts, and work under way
        keeps its thread until it stops (at its next image, or when it ends).
        """
        abandoned = threading.Event()
        future = self._threads.submit(work, abandoned)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            abandoned.set()
            raise

    def within_budget(
        self, amount: int, abandoned: threading.Event, what: str, work: Callable[[], T]
    ) -> T:
        """``work()`` holding ``amount`` bytes of the budget; small work holds nothing (and
        skips the ``with``, which would cost a small request more than the check).

        ``what`` the work is for, as the refusal names it: "image" or "request body".
        """
        if amount <= UNRESERVED_BYTES:
            return work()
        with self.holding(amount, abandoned, what):
            return work()

    @contextmanager
    def holding(self, amount: int, abandoned: threading.Event, what: str) -> Iterator[None]:
        # What the allocator kept from earlier work (up to RETAINED_BYTES) is not in the
        # budget: handed back first when large work would otherwise pass the limit.
        if amount >= TRIM_AFTER_BYTES and self._would_pass_the_limit(amount):
            self.hand_back()
        try:
            with self.budget.hold(amount, abandoned):
                yield
        except OverBudget as error:
            raise ClientError(
                f"this {what} needs about {error.needed / MIB:,.0f} MiB to process, more than "
                f"the {error.total / MIB:,.0f} MiB this server may use for one request's work "
                f"(DLOPS_MAX_WORKER_MEMORY); send a smaller {what}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                kind="over_memory_budget",
            ) from None
        finally:
            if amount >= TRIM_AFTER_BYTES:
                self.hand_back_if_grown()

    def _would_pass_the_limit(self, amount: int) -> bool:
        return resident_bytes() + amount > self.max_memory - self.body_memory

    def hand_back_if_grown(self) -> None:
        """Hand freed memory back to the system when the worker has grown past the margin."""
        if self._allocator is not None and resident_bytes() > self._trim_above:
            self._allocator.trim()
            # What a trim cannot hand back is held for good: the margin counts from what is left.
            self._trim_above = resident_bytes() + RETAINED_BYTES

    def hand_back(self) -> None:
        """Hand freed memory back now (after a model is unloaded or replaced)."""
        if self._allocator is not None:
            self._allocator.trim()
            self._trim_above = resident_bytes() + RETAINED_BYTES
