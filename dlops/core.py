"""The one request path: files (or a ready tensor) in, probabilities or per-item errors out.

``/predict``, ``/predict_batch`` (dlops/direct_route.py) and ``/v2`` (dlops/v2/) are thin adapters
over :class:`Core`: it waits for the model off the event loop, decodes and preprocesses by the
model's spec, runs the model, postprocesses and counts the metrics.

Where the work runs follows from what it will cost, known before it starts: small images
(declared in their headers) for a small model are answered on the event loop, where a thread
hand-off would cost more than the work; everything else runs on the core's worker threads, and
each image reserves the memory its decode will take from the worker's budget first. A request
abandoned at its deadline stops at its next image, and its thread stays taken until the work in
hand really ends, so abandoned work never runs beyond the threads' number.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from dlops.decode import (
    DecodeLimits,
    ImageError,
    decode_cost,
    load_reduced,
    open_image,
    reduced_size,
)
from dlops.errors import ClientError
from dlops.inference import BackgroundLoader
from dlops.memory import MIB, Abandoned, Allocator, MemoryBudget, OverBudget, resident_bytes
from dlops.metrics import PredictionMetrics, error_kind
from dlops.postprocess import Postprocessor
from dlops.preprocess import Preprocessor
from dlops.spec import ModelSpec

T = TypeVar("T")
# The event loop answers a request itself only when all of this holds: the model costs at most
# INLINE_MAX_INFER_SECONDS an image (the digit models cost far less, a 224 x 224 CNN
# milliseconds), the upload is at most INLINE_MAX_BYTES (so that even reading its headers is
# cheap) and every image declares at most INLINE_MAX_PIXELS in a format that decodes in one pass.
INLINE_MAX_INFER_SECONDS = 0.0005
INLINE_MAX_BYTES = 64 * 1024
INLINE_MAX_PIXELS = 256 * 256
INLINE_FORMATS = ("PNG", "GIF", "BMP", "JPEG")
# Work this small runs without a reservation: it fits in any budget's slack.
UNRESERVED_BYTES = 4 * MIB
# After work that held this much, freed memory is handed back to the system, when the worker
# then holds more than RETAINED_BYTES above what it held at rest or after the last hand-back:
# the next photos reuse what the last ones freed (handing it back after every one cost a photo's
# worth of page faults per request, half the orientation model's throughput), and a burst is
# still given back.
TRIM_AFTER_BYTES = 16 * MIB
RETAINED_BYTES = 64 * MIB
# Parsing a JSON body can take this many bytes per byte of it (a list of one-digit floats).
PARSE_BYTES_PER_BODY_BYTE = 16
# The budget never drops below this, however much the worker holds at rest.
MIN_BUDGET_BYTES = 64 * MIB
# Each call's weight in the moving average of the model's cost per image.
COST_AVERAGE_WEIGHT = 0.05
# Predictions are counted by label when a model has at most this many classes; beyond it, by
# ranges of class indices, so that 1,000 ImageNet labels do not make 1,000 time series.
MAX_LABELLED_CLASSES = 50
CLASS_RANGES = 10
NEVER = threading.Event()  # the abandoned flag of work that runs on the event loop


@dataclass(frozen=True)
class CoreLimits:
    """What one request may cost the worker; the defaults suit tests, config.py sets serving's."""

    decode: DecodeLimits = field(default_factory=DecodeLimits)
    # Pixels all the images of one request may declare together (decoding time grows with them).
    max_request_pixels: int = 80_000_000
    # The resident memory the worker may reach; heavy work shares what the model leaves of it.
    max_worker_memory: int = 1024 * MIB
    # Kept out of the heavy work's budget: request bodies held while they are read and split.
    body_memory: int = 0
    work_threads: int = 2
    model_wait_seconds: float = 5.0
    # Hand freed memory back to the system after large work (dlops/memory.py's Allocator).
    return_memory: bool = True


@dataclass
class Outcome:
    """The result of one batch: probabilities of the items that succeeded, errors of the rest."""

    probabilities: np.ndarray  # [number of successes, K] (binary: [n, 1] of P(positive))
    succeeded: list[int]  # the item index of each row of ``probabilities``
    errors: dict[int, ClientError] = field(default_factory=dict)

    def rows(self) -> dict[int, np.ndarray]:
        return dict(zip(self.succeeded, self.probabilities, strict=True))


class Core:
    def __init__(
        self,
        spec: ModelSpec,
        loader: BackgroundLoader,
        metrics: PredictionMetrics,
        limits: CoreLimits | None = None,
    ) -> None:
        self.spec = spec
        self.loader = loader
        self.metrics = metrics
        self.limits = limits or CoreLimits()
        self.preprocessor = Preprocessor(spec)
        self.postprocessor = Postprocessor(spec.postprocess)
        self._threads = ThreadPoolExecutor(self.limits.work_threads, "dlops-work")
        self._budget: MemoryBudget | None = None  # sized once the model has loaded
        self._sizing_budget = threading.Lock()
        self._allocator = Allocator() if self.limits.return_memory else None
        self._trim_above = 0  # resident bytes past which freed memory is handed back
        self._typical_seconds: float | None = None  # per image; see _seconds_per_image
        classes = spec.postprocess.classes
        self._class_range = -(-classes // CLASS_RANGES)  # ceil

    # -- running the work where it belongs --------------------------------------------------

    async def _model_ready(self) -> None:
        if not self.loader.is_ready:  # checked first: awaiting costs µs on every request
            await self.loader.wait(self.limits.model_wait_seconds)  # ModelNotReady after it

    def _seconds_per_image(self) -> float:
        """What the model costs an image: the warm-up's figure, then a moving average of the
        calls served, so that one slow moment (a busy machine at start-up) does not decide for
        good."""
        if self._typical_seconds is None:
            self._typical_seconds = self.loader.seconds_per_image
        return self._typical_seconds

    def _model_is_small(self) -> bool:
        return self._seconds_per_image() <= INLINE_MAX_INFER_SECONDS

    async def _off_loop(self, work: Callable[[threading.Event], T]) -> T:
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

    async def parse_off_loop_if_large(self, parse: Callable[[], T], body_bytes: int) -> T:
        """``parse()`` of a request body: inline when small, else on a thread within budget.

        For the adapters' own parsing of large bodies (a 10 MB JSON tensor, say).
        """
        if body_bytes <= INLINE_MAX_BYTES:
            return parse()

        cost = body_bytes * PARSE_BYTES_PER_BODY_BYTE
        return await self._off_loop(
            lambda abandoned: self._within_budget(cost, abandoned, "request body", parse)
        )

    def _within_budget(
        self, amount: int, abandoned: threading.Event, what: str, work: Callable[[], T]
    ) -> T:
        """``work()`` holding ``amount`` bytes of the budget; small work holds nothing (and
        skips the ``with``, which would cost a small request more than the check).

        ``what`` the work is for, as the refusal names it: "image" or "request body".
        """
        if amount <= UNRESERVED_BYTES:
            return work()
        with self._holding(amount, abandoned, what):
            return work()

    @contextmanager
    def _holding(self, amount: int, abandoned: threading.Event, what: str) -> Iterator[None]:
        budget = self._memory_budget()
        try:
            with budget.hold(amount, abandoned):
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
            if (
                amount >= TRIM_AFTER_BYTES
                and self._allocator is not None
                and resident_bytes() > self._trim_above
            ):
                self._allocator.trim()
                # What a trim cannot hand back (onnxruntime's arena grown by a large batch) is
                # held for good: the margin counts from what is left.
                self._trim_above = resident_bytes() + RETAINED_BYTES

    def _memory_budget(self) -> MemoryBudget:
        """What the worker may add to what it holds with the model loaded (measured once)."""
        with self._sizing_budget:
            if self._budget is None:
                at_rest = resident_bytes()
                spare = self.limits.max_worker_memory - at_rest - self.limits.body_memory
                self._budget = MemoryBudget(max(spare, MIN_BUDGET_BYTES))
                self._trim_above = at_rest + RETAINED_BYTES
            return self._budget

    # -- the adapters' entry points -----------------------------------------------------------

    async def classify_files(
        self, files: list[bytes], stop_at_first_error: bool = False
    ) -> Outcome:
        """Every file decoded, preprocessed and classified; a bad file gets its own error.

        ``stop_at_first_error``: for protocols where one bad file fails the whole request, the
        rest is neither decoded nor classified (nor counted).
        """
        if not self.loader.is_ready:  # checked here: a coroutine per request costs µs
            await self._model_ready()
        opened = self._opened_if_cheap(files)
        if opened is not None:
            return self._classify_files(files, opened, stop_at_first_error, NEVER)
        return await self._off_loop(
            lambda abandoned: self._classify_files(files, None, stop_at_first_error, abandoned)
        )

    async def classify_tensor(self, batch: np.ndarray) -> np.ndarray:
        """A batch already in the input's dtype and shape, fed as it is -> probabilities."""
        await self._model_ready()
        items = list(range(len(batch)))
        if self._model_is_small() and batch.nbytes <= INLINE_MAX_BYTES:
            return self._infer(batch, items).probabilities
        outcome = await self._off_loop(lambda abandoned: self._infer(batch, items))
        return outcome.probabilities

    # -- the work -----------------------------------------------------------------------------

    def _opened_if_cheap(self, files: list[bytes]) -> list[Image.Image | ClientError] | None:
        """Every file's header, read on the event loop, when all of them are cheap to decode
        there; None when any is not (or the model is not small), so all go to a thread."""
        if not self._model_is_small() or sum(map(len, files)) > INLINE_MAX_BYTES:
            return None
        opened: list[Image.Image | ClientError] = []
        for file in files:
            try:
                image = self.open(file)
            except ClientError as error:
                opened.append(error)
                continue
            if (
                image.width * image.height > INLINE_MAX_PIXELS
                or image.format not in INLINE_FORMATS
                or image.info.get("progressive")
            ):
                return None
            opened.append(image)
        return opened

    def open(self, file: bytes) -> Image.Image:
        """The image's header, checked against the limits; a refusal is a ClientError."""
        try:
            return open_image(file, self.limits.decode)
        except ImageError as error:
            raise _client_error(error) from None

    def prepare(
        self, file: bytes, image: Image.Image | None = None, abandoned: threading.Event = NEVER
    ) -> np.ndarray:
        """One encoded image -> one example of the input tensor; a bad image is a ClientError.

        ``image``: the file already opened (its header read).
        """
        started = time.perf_counter()
        image = image or self.open(file)
        reduction = self.preprocessor.reduction(*image.size)
        working = self.preprocessor.working_bytes(*reduced_size(*image.size, reduction))
        cost = decode_cost(image, reduction) + working
        try:
            example, decoded_at = self._within_budget(
                cost, abandoned, "image", lambda: self._decoded_example(image, reduction)
            )
        except ImageError as error:
            raise _client_error(error) from None
        self.metrics.prepared(decoded_at - started, time.perf_counter() - decoded_at)
        return example

    def _decoded_example(self, image: Image.Image, reduction: int) -> tuple[np.ndarray, float]:
        """The example and the moment its decoding ended."""
        decoded = load_reduced(image, reduction)
        decoded_at = time.perf_counter()
        return self.preprocessor(decoded), decoded_at

    def _classify_files(
        self,
        files: list[bytes],
        opened: list[Image.Image | ClientError] | None,
        stop_at_first_error: bool,
        abandoned: threading.Event,
    ) -> Outcome:
        examples: list[np.ndarray] = []
        readable: list[int] = []
        errors: dict[int, ClientError] = {}
        pixels_left = self.limits.max_request_pixels
        for index, file in enumerate(files):
            if abandoned.is_set():
                raise Abandoned()
            header = opened[index] if opened is not None else None
            try:
                if isinstance(header, ClientError):
                    raise header
                header = header or self.open(file)
                pixels = header.width * header.height
                if pixels > pixels_left:
                    raise ClientError(
                        "the images of this request add up to more than "
                        f"{self.limits.max_request_pixels:,} pixels; send the rest in another "
                        "request",
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        kind="over_request_pixels",
                    )
                pixels_left -= pixels
                examples.append(self.prepare(file, header, abandoned))
                readable.append(index)
            except ClientError as error:
                self.metrics.failed(error.kind)
                error.counted = True
                errors[index] = error
                if stop_at_first_error:
                    break
        if not examples or (errors and stop_at_first_error):
            return Outcome(np.empty((0, self.spec.postprocess.classes)), [], errors)
        # One image (most requests): a view with a batch axis, not np.stack's copy.
        batch = examples[0][None] if len(examples) == 1 else np.stack(examples)
        outcome = self._infer(batch, readable)
        outcome.errors = errors
        return outcome

    def _infer(self, batch: np.ndarray, items: list[int]) -> Outcome:
        classifier = self.loader.loaded()  # the entry points waited for it
        started = time.perf_counter()
        probabilities = self.postprocessor.probabilities(classifier.run(batch))
        seconds = time.perf_counter() - started
        if self._typical_seconds is not None:
            self._typical_seconds += COST_AVERAGE_WEIGHT * (
                seconds / len(batch) - self._typical_seconds
            )
        self.metrics.inferred(seconds, *self.metric_answers(probabilities))
        return Outcome(probabilities, items)

    # -- answers and metrics ------------------------------------------------------------------

    def answer(self, row: np.ndarray, top_k: int | None = None) -> dict[str, Any]:
        return self.postprocessor.answer(row, top_k)

    def answers(self, outcome: Outcome, top_k: int | None = None) -> list[dict[str, Any]]:
        """One answer per item, in order; a failed item's is ``{"error": ..., "status": 4xx}``."""
        rows = outcome.rows()
        answers: list[dict[str, Any]] = []
        for index in range(len(rows) + len(outcome.errors)):
            error = outcome.errors.get(index)
            if error is None:
                answers.append(self.answer(rows[index], top_k))
            else:
                answers.append({"error": error.message, "status": int(error.error_code)})
        return answers

    def metric_answers(self, probabilities: np.ndarray) -> tuple[list[float], list[str]]:
        """Each image's probability and label as the metrics count them.

        P(positive) and the answered label for a binary model; the top-1 probability and label
        for K classes, the label replaced by a range of class indices beyond 50 classes.
        """
        post = self.postprocessor
        if self.spec.postprocess.is_binary:
            probas = probabilities[:, 0].tolist()
            return probas, [post.binary_label(proba) for proba in probas]
        best = probabilities.argmax(axis=1)
        probas = probabilities[np.arange(len(best)), best].tolist()
        return probas, [self.metric_label(index) for index in best.tolist()]

    def metric_label(self, index: int) -> str:
        """The top-1 class's label, or its range of class indices for a model of many classes."""
        classes = self.spec.postprocess.classes
        if classes <= MAX_LABELLED_CLASSES:
            return self.postprocessor.labels[index]
        first = index // self._class_range * self._class_range
        last = min(first + self._class_range, classes) - 1
        return f"classes {first}-{last}"


def _client_error(error: ImageError) -> ClientError:
    return ClientError(str(error), error.status, kind=error_kind(error))
