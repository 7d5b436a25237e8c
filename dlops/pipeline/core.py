"""The one request path: files (or a ready tensor) in, probabilities or per-item errors out.

``/predict``, ``/predict_batch`` (dlops/http/direct_route.py) and ``/v2`` (dlops/api/v2/) are thin
adapters over :class:`Core`: it waits for the model off the event loop, decodes and preprocesses by
the model's spec, runs the model, postprocesses and counts the metrics.

Where the work runs follows from what it will cost, known before it starts: small images
(declared in their headers) for a small model are answered on the event loop, where a thread
hand-off would cost more than the work, and those that arrive together share one model call
(dlops/pipeline/turn_batch.py); everything else runs on the core's worker threads, and
each image reserves the memory its decode will take from the worker's budget first. A request
abandoned at its deadline stops at its next image, and its thread stays taken until the work in
hand really ends, so abandoned work never runs beyond the threads' number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from dlops.metrics import PredictionMetrics, error_kind
from dlops.model.spec import ModelSpec
from dlops.pipeline.decode import DecodeLimits, Decoding, ImageError, open_image, planned
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import BackgroundLoader, Classifier
from dlops.pipeline.memory import MIB, Abandoned
from dlops.pipeline.postprocess import Postprocessor
from dlops.pipeline.preprocess import Preprocessor
from dlops.pipeline.turn_batch import TurnBatch
from dlops.pipeline.worker import TRIM_AFTER_BYTES, UNRESERVED_BYTES, Worker

T = TypeVar("T")
# The event loop answers a request itself only when all of this holds: the model costs at most
# INLINE_MAX_INFER_SECONDS an image (the digit models cost far less, a 224 x 224 CNN
# milliseconds), the upload is at most INLINE_MAX_BYTES (so that even reading its headers is
# cheap) and every image declares at most INLINE_MAX_PIXELS in a format that decodes in one pass.
INLINE_MAX_INFER_SECONDS = 0.0005
INLINE_MAX_BYTES = 64 * 1024
INLINE_MAX_PIXELS = 256 * 256
INLINE_FORMATS = ("PNG", "GIF", "BMP", "JPEG")
# Parsing a JSON body can take this many bytes per byte of it (a list of one-digit floats).
PARSE_BYTES_PER_BODY_BYTE = 16
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
    # Hand freed memory back to the system after large work (dlops/pipeline/memory.py's Allocator).
    return_memory: bool = True
    # Small images that arrive together on the event loop share one model call (turn_batch.py).
    adaptive_batching: bool = True


def worker_for(limits: CoreLimits) -> Worker:
    """The threads and memory budget ``limits`` give a worker (shared by its models' cores)."""
    return Worker(
        limits.max_worker_memory, limits.body_memory, limits.work_threads, limits.return_memory
    )


@dataclass
class Outcome:
    """The result of one batch: probabilities of the items that succeeded, errors of the rest."""

    probabilities: np.ndarray  # [number of successes, K] (binary: [n, 1] of P(positive))
    succeeded: list[int]  # the item index of each row of ``probabilities``
    errors: dict[int, ClientError] = field(default_factory=dict)

    def rows(self) -> dict[int, np.ndarray]:
        return dict(zip(self.succeeded, self.probabilities, strict=True))


class Core:
    """One loaded model's request path, on the threads and within the memory of ``worker``
    (shared by every model the worker serves; its own, sized by ``limits``, by default)."""

    def __init__(
        self,
        spec: ModelSpec,
        loader: BackgroundLoader,
        metrics: PredictionMetrics,
        limits: CoreLimits | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.spec = spec
        self.loader = loader
        self.metrics = metrics
        self.limits = limits or CoreLimits()
        self.worker = worker or worker_for(self.limits)
        self.preprocessor = Preprocessor(spec)
        self.postprocessor = Postprocessor(spec.postprocess)
        self._typical_seconds: float | None = None  # per image; see _seconds_per_image
        self._turn_batch: TurnBatch | None = None  # made once the model is measured
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

    async def parse_off_loop_if_large(self, parse: Callable[[], T], body_bytes: int) -> T:
        """``parse()`` of a request body: inline when small, else on a thread within budget.

        For the adapters' own parsing of large bodies (a 10 MB JSON tensor, say).
        """
        if body_bytes <= INLINE_MAX_BYTES:
            return parse()

        cost = body_bytes * PARSE_BYTES_PER_BODY_BYTE
        return await self.worker.off_loop(
            lambda abandoned: self.worker.within_budget(cost, abandoned, "request body", parse)
        )

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
            prepared = self._prepare_files(files, opened, stop_at_first_error, NEVER)
            turn_batch = self._batch_of_the_turn() if len(files) == 1 else None
            if turn_batch is None or prepared.succeeded != [0]:
                return self._classify_prepared(prepared, NEVER)
            row = await turn_batch.classify(prepared.examples.batch(), self._probabilities_of)
            return Outcome(row, [0])
        return await self.worker.off_loop(
            lambda abandoned: self._classify_files(files, None, stop_at_first_error, abandoned)
        )

    async def classify_tensor(self, batch: np.ndarray) -> np.ndarray:
        """A batch already in the input's dtype and shape, fed as it is -> probabilities; one
        example meets the others of its turn, as a small image does."""
        await self._model_ready()
        items = list(range(len(batch)))
        inline = (
            self._model_is_small()
            and batch.nbytes <= INLINE_MAX_BYTES
            and self._activation_bytes(len(batch)) <= UNRESERVED_BYTES
        )
        if inline:
            turn_batch = self._batch_of_the_turn() if len(batch) == 1 else None
            if turn_batch is not None:
                return await turn_batch.classify(batch, self._probabilities_of)
            return self._infer(batch, items).probabilities
        outcome = await self.worker.off_loop(lambda abandoned: self._infer(batch, items, abandoned))
        return outcome.probabilities

    def _batch_of_the_turn(self) -> TurnBatch | None:
        """Where a small image answered on the event loop meets the others of its turn; None
        when the model's answers for a batch are not each image's own, bit for bit (then every
        request keeps its own model call), or when turned off."""
        if self._turn_batch is None and self.limits.adaptive_batching and self.loader.batches_alike:
            most = UNRESERVED_BYTES // max(1, self.batch_bytes_per_image())
            self._turn_batch = TurnBatch(most)
        return self._turn_batch

    def _probabilities_of(self, batch: np.ndarray) -> np.ndarray:
        return self._infer(batch, list(range(len(batch)))).probabilities

    # -- the work -----------------------------------------------------------------------------

    def _opened_if_cheap(self, files: list[bytes]) -> list[Image.Image | ClientError] | None:
        """Every file's header, read on the event loop, when all of them are cheap to decode
        there; None when any is not (or the model is not small), so all go to a thread."""
        if (
            not self._model_is_small()
            or sum(map(len, files)) > INLINE_MAX_BYTES
            or self._activation_bytes(len(files)) > UNRESERVED_BYTES
        ):
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
        decoding = planned(image or self.open(file), self.preprocessor)
        try:
            example, decoded_at = self.worker.within_budget(
                decoding.cost, abandoned, "image", lambda: self._decoded_example(decoding)
            )
        except ImageError as error:
            raise _client_error(error) from None
        self.metrics.prepared(decoded_at - started, time.perf_counter() - decoded_at)
        return example

    def _decoded_example(self, decoding: Decoding) -> tuple[np.ndarray, float]:
        """The example and the moment its decoding ended."""
        decoded = decoding.decode()
        decoded_at = time.perf_counter()
        return self.preprocessor(decoded), decoded_at

    def _classify_files(
        self,
        files: list[bytes],
        opened: list[Image.Image | ClientError] | None,
        stop_at_first_error: bool,
        abandoned: threading.Event,
    ) -> Outcome:
        prepared = self._prepare_files(files, opened, stop_at_first_error, abandoned)
        return self._classify_prepared(prepared, abandoned)

    def _prepare_files(
        self,
        files: list[bytes],
        opened: list[Image.Image | ClientError] | None,
        stop_at_first_error: bool,
        abandoned: threading.Event,
    ) -> _Prepared:
        prepared = _Prepared(_Examples(len(files)), stop_at_first_error)
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
                prepared.examples.append(self.prepare(file, header, abandoned))
                prepared.succeeded.append(index)
            except ClientError as error:
                self.metrics.failed(error.kind)
                error.counted = True
                prepared.errors[index] = error
                if stop_at_first_error:
                    break
        return prepared

    def _classify_prepared(self, prepared: _Prepared, abandoned: threading.Event) -> Outcome:
        errors = prepared.errors
        if not prepared.succeeded or (errors and prepared.stop_at_first_error):
            return Outcome(np.empty((0, self.spec.postprocess.classes)), [], errors)
        outcome = self._infer(prepared.examples.batch(), prepared.succeeded, abandoned)
        outcome.errors = errors
        return outcome

    def _infer(
        self, batch: np.ndarray, items: list[int], abandoned: threading.Event = NEVER
    ) -> Outcome:
        classifier = self.loader.loaded()  # the entry points waited for it
        started = time.perf_counter()
        if self._activation_bytes(len(batch)) <= UNRESERVED_BYTES:
            raw = classifier.run(batch)
        else:
            raw = self._run_within_budget(classifier, batch, abandoned)
        probabilities = self.postprocessor.probabilities(raw)
        seconds = time.perf_counter() - started
        if self._typical_seconds is not None:
            self._typical_seconds += COST_AVERAGE_WEIGHT * (
                seconds / len(batch) - self._typical_seconds
            )
        self.metrics.inferred(seconds, *self.metric_answers(probabilities))
        return Outcome(probabilities, items)

    def _activation_bytes(self, images: int) -> int:
        """What running the model on ``images`` images at once adds to the worker's memory."""
        return images * self.loader.activation_bytes_per_image

    def batch_bytes_per_image(self) -> int:
        """What each image of a batch holds while the model runs: its activations, and its
        example of the input (kept until the answers are made)."""
        return self.loader.activation_bytes_per_image + self.preprocessor.example_bytes

    def _run_within_budget(
        self, classifier: Classifier, batch: np.ndarray, abandoned: threading.Event
    ) -> np.ndarray:
        """The batch run in parts whose memory fits in the budget, each part holding its share
        while it runs: its activations, and its examples (held until the answers are made);
        the answers are the same as one run's."""
        per_image = self.batch_bytes_per_image()
        total = self.worker.budget.total
        if per_image > total:
            raise ClientError(
                f"this model needs about {per_image / MIB:,.0f} MiB of working memory per image, "
                f"more than the {total / MIB:,.0f} MiB this server may use for one request's work "
                "(DLOPS_MAX_WORKER_MEMORY); retry when the server is less loaded",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                kind="over_memory_budget",
            )
        size = max(1, min(len(batch), total // per_image))
        parts = []
        for start in range(0, len(batch), size):
            if abandoned.is_set():
                raise Abandoned()
            part = batch[start : start + size]
            amount = len(part) * per_image
            run = partial(classifier.run, part, hand_back=amount >= TRIM_AFTER_BYTES)
            parts.append(self.worker.within_budget(amount, abandoned, "batch", run))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

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


@dataclass
class _Prepared:
    """A request's files made into examples, before the model runs: the examples, the item
    index of each, and the errors of the files that could not be."""

    examples: _Examples
    stop_at_first_error: bool
    succeeded: list[int] = field(default_factory=list)
    errors: dict[int, ClientError] = field(default_factory=dict)


class _Examples:
    """A request's examples, written into one batch array as each is made (np.stack of a list
    would hold every example twice)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._first: np.ndarray | None = None
        self._batch: np.ndarray | None = None
        self._count = 0

    def append(self, example: np.ndarray) -> None:
        if self._first is None:
            self._first = example
        else:
            if self._batch is None:
                shape = (self._capacity, *self._first.shape)
                self._batch = np.empty(shape, dtype=self._first.dtype)
                self._batch[0] = self._first
            self._batch[self._count] = example
        self._count += 1

    def batch(self) -> np.ndarray:
        """The examples as a batch: one image (most requests) is a view with a batch axis."""
        assert self._first is not None
        if self._batch is None:
            return self._first[None]
        return self._batch[: self._count]


def _client_error(error: ImageError) -> ClientError:
    return ClientError(str(error), error.status, kind=error_kind(error))
