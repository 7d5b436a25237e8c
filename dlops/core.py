"""The one request path: files (or a ready tensor) in, probabilities or per-item errors out.

``/predict``, ``/predict_batch`` (dlops/direct_route.py) and ``/v2`` (dlops/v2/) are thin adapters
over :class:`Core`: it waits for the model off the event loop, decodes and preprocesses by the
model's spec, runs the model, postprocesses and counts the metrics. Small uploads for a small
model (as measured at warm-up) are answered on the event loop (a thread hand-off costs more
than the work); anything heavier runs on a worker thread, large uploads one at a time per
worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from dlops.decode import ImageError, decode_image
from dlops.errors import ClientError
from dlops.inference import BackgroundLoader
from dlops.metrics import PredictionMetrics, error_kind
from dlops.postprocess import Postprocessor
from dlops.preprocess import Preprocessor
from dlops.spec import ModelSpec

T = TypeVar("T")
# Uploads up to this size are decoded on the event loop when the model is small: a digit PNG is
# a few hundred bytes and costs less to decode than a hand-off to a thread.
INLINE_MAX_BYTES = 256 * 1024
# A model that costs at most this per image (the digit models cost far less) runs on the
# event loop for small uploads; slower ones (a 224 x 224 CNN takes milliseconds) on a thread,
# so that no request holds the loop, and the health probes behind it, for long.
INLINE_MAX_INFER_SECONDS = 0.0005
# Each call's weight in the moving average of the model's cost per image.
COST_AVERAGE_WEIGHT = 0.05
# Predictions are counted by label when a model has at most this many classes; beyond it, by
# ranges of class indices, so that 1,000 ImageNet labels do not make 1,000 time series.
MAX_LABELLED_CLASSES = 50
CLASS_RANGES = 10


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
        max_pixels: int,
        model_wait_seconds: float,
    ) -> None:
        self.spec = spec
        self.loader = loader
        self.metrics = metrics
        self.max_pixels = max_pixels
        self.model_wait_seconds = model_wait_seconds
        self.preprocessor = Preprocessor(spec)
        self.postprocessor = Postprocessor(spec.postprocess)
        self._large_upload_slots: anyio.CapacityLimiter | None = None
        self._typical_seconds: float | None = None  # per image; see _seconds_per_image
        classes = spec.postprocess.classes
        self._class_range = -(-classes // CLASS_RANGES)  # ceil

    # -- running the work where it belongs --------------------------------------------------

    async def _run(self, work: Callable[[], T], upload_bytes: int) -> T:
        if not self.loader.is_ready:  # checked first: awaiting costs µs on every request
            await self.loader.wait(self.model_wait_seconds)  # ModelNotReady after the wait
        if upload_bytes > INLINE_MAX_BYTES:
            return await self.off_loop_if_large(work, upload_bytes)
        if self._seconds_per_image() > INLINE_MAX_INFER_SECONDS:
            return await anyio.to_thread.run_sync(work)
        return work()

    def _seconds_per_image(self) -> float:
        """What the model costs an image: the warm-up's figure, then a moving average of the
        calls served, so that one slow moment (a busy machine at start-up) does not decide for
        good."""
        if self._typical_seconds is None:
            self._typical_seconds = self.loader.seconds_per_image
        return self._typical_seconds

    async def off_loop_if_large(self, work: Callable[[], T], upload_bytes: int) -> T:
        """``work()`` inline for a small upload; on a thread for a large one, one at a time.

        Also for the adapters' own parsing of large bodies (a 10 MB JSON tensor, say).
        """
        if upload_bytes <= INLINE_MAX_BYTES:
            return work()
        # A 40 MP photo needs hundreds of MB while it is decoded: one at a time per worker.
        return await anyio.to_thread.run_sync(work, limiter=self._large_upload_limiter())

    def _large_upload_limiter(self) -> anyio.CapacityLimiter:
        if self._large_upload_slots is None:  # created lazily: it belongs to the running loop
            self._large_upload_slots = anyio.CapacityLimiter(1)
        return self._large_upload_slots

    # -- the adapters' entry points -----------------------------------------------------------

    async def classify_files(
        self, files: list[bytes], stop_at_first_error: bool = False
    ) -> Outcome:
        """Every file decoded, preprocessed and classified; a bad file gets its own error.

        ``stop_at_first_error``: for protocols where one bad file fails the whole request, the
        rest is neither decoded nor classified (nor counted).
        """
        return await self._run(
            lambda: self._classify_files(files, stop_at_first_error), sum(map(len, files))
        )

    async def classify_tensor(self, batch: np.ndarray) -> np.ndarray:
        """A batch already in the input's dtype and shape, fed as it is -> probabilities."""
        outcome = await self._run(lambda: self._infer(batch, list(range(len(batch)))), batch.nbytes)
        return outcome.probabilities

    # -- the work -----------------------------------------------------------------------------

    def prepare(self, file: bytes) -> np.ndarray:
        """One encoded image -> one example of the input tensor; a bad image is a ClientError."""
        started = time.perf_counter()
        try:
            image = decode_image(file, max_pixels=self.max_pixels)
            decoded_at = time.perf_counter()
            example = self.preprocessor(image)
        except ImageError as error:
            raise ClientError(str(error), error.status, kind=error_kind(error)) from None
        self.metrics.prepared(decoded_at - started, time.perf_counter() - decoded_at)
        return example

    def _classify_files(self, files: list[bytes], stop_at_first_error: bool) -> Outcome:
        examples: list[np.ndarray] = []
        readable: list[int] = []
        errors: dict[int, ClientError] = {}
        for index, file in enumerate(files):
            try:
                examples.append(self.prepare(file))
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
        classifier = self.loader.get(timeout=0)  # loaded: _run waited for it
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
