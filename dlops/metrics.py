"""Prometheus metrics of dlops, scraped at /metrics beside BentoML's own.

Requests answered by a direct route never reach BentoML's metrics middleware, so they are
counted here, with what the predictions were, where the time went and why requests failed.
prometheus_client is imported on first use, not at import time: BentoML's workers
set PROMETHEUS_MULTIPROC_DIR after importing the service module, and prometheus_client picks its
single- or multi-process storage when it is first imported.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

from dlops import config
from dlops.compat import histogram_counters

T = TypeVar("T")
logger = logging.getLogger(config.LOGGER_NAME)
# Latency buckets from 0.5 ms (a digit PNG) to 10 s (a 40 MP photo), in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# A stage of one image takes from ~10 µs (inference of a digit) to seconds (decoding a photo).
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 0.01, 0.05, 0.25, 1, 10)
# Probabilities: fine near 0 and 1, where a healthy model's answers pile up; a drift of the inputs
# shows as answers moving into the middle buckets.
PROBA_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# How stale another worker's per-image metrics may be in a scrape.
FLUSH_SECONDS = 1.0
# Observations queued between two flushes, at most: tens of seconds of a worker's busiest load.
# Should the flush fall that far behind, the oldest are dropped rather than memory grow.
MAX_PENDING = 100_000


class RouteMetrics:
    """Requests answered by a direct route. Each is counted at once, so that a scrape of any
    worker counts every request of all; their latencies are tallied like the per-image figures
    of ``PredictionMetrics`` (written every FLUSH_SECONDS and before this worker's scrape)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self._requests = Counter(
            "dlops_requests",
            "Requests answered by a direct route, by path and HTTP status",
            ["path", "status"],
        )
        self._seconds = Histogram(
            "dlops_request_duration_seconds",
            "Time from the request's arrival to its answer, by path",
            ["path"],
            buckets=LATENCY_BUCKETS,
        )
        # labels() costs more than the increment itself; the label sets are few and fixed.
        self._counters: dict[tuple[str, int], Any] = {}
        self._latencies: dict[str, _Tally] = {}
        # (path, seconds) of each request, counted at the next flush: an append is atomic.
        self._observed: deque[tuple[str, float]] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()
        flush_periodically(self)

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._requests.labels(path=path, status=str(status))
            self._counters[key] = counter
        counter.inc()
        self._observed.append((path, seconds))

    def flush(self) -> None:
        with self._lock:
            for path, seconds in _drained(self._observed):
                latencies = self._latencies.get(path)
                if latencies is None:
                    latencies = _Tally(self._seconds.labels(path=path), LATENCY_BUCKETS)
                    self._latencies[path] = latencies
                latencies.observe(seconds)
            for latencies in self._latencies.values():
                latencies.flush()


class _Tally:
    """Observations of one histogram, counted in the worker and written to its storage in bulk.

    In Prometheus multiprocess mode (BentoML's workers) every increment is a locked write to a
    memory-mapped file and a getpid() system call: observing each image's stages and probability
    one by one cost ~7 µs an image, a fifth of /predict_batch's throughput. Counting here costs a
    bisect.
    """

    def __init__(self, histogram: Any, buckets: tuple[float, ...]) -> None:
        self._histogram = histogram
        self._bounds = [*buckets, math.inf]  # as prometheus_client stores them, +Inf last
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1  # first bound >= value
        self._sum += value

    def flush(self) -> None:
        if not any(self._counts):
            return
        buckets, total = histogram_counters(self._histogram)
        for bucket, count in zip(buckets, self._counts, strict=True):
            if count:
                bucket.inc(count)
        total.inc(self._sum)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0


class PredictionMetrics:
    """What one model answered, where each image's time went, and why requests failed.

    Every series has a ``model`` label: the served model's name, or "" for a request refused
    before a model was chosen (no API key, a body that never arrived). Names are those served,
    so the series stay as few as the models.

    Per-image figures are tallied in the worker and written out every FLUSH_SECONDS, and
    before this worker answers a scrape (``FlushBeforeScrape``): with one worker, /metrics is
    exact; with several, another worker's last second may be missing from a scrape.
    """

    def __init__(self, model: str) -> None:
        families = _prediction_families()
        self._predictions = families.predictions
        self._model = model
        self._proba = _Tally(families.proba.labels(model=model), PROBA_BUCKETS)
        stages = families.stage_seconds
        self._decode = _Tally(stages.labels(model=model, stage="decode"), STAGE_BUCKETS)
        self._preprocess = _Tally(stages.labels(model=model, stage="preprocess"), STAGE_BUCKETS)
        self._infer = _Tally(stages.labels(model=model, stage="infer"), STAGE_BUCKETS)
        self._label_counts: dict[str, int] = {}
        self._errors = families.errors
        self._execution_providers = families.execution_providers
        self._providers: tuple[str, ...] = ()
        # Observations wait here until the next flush counts them: requests are answered on the
        # event loop and on worker threads, and an append is atomic where a tally is not.
        self._prepared: deque[tuple[float, float]] = deque(maxlen=MAX_PENDING)
        self._inferred: deque[tuple[float, list[float], list[str]]] = deque(maxlen=MAX_PENDING)
        self._lock = threading.Lock()  # one flush at a time
        flush_periodically(self)

    def prepared(self, decode_seconds: float, preprocess_seconds: float) -> None:
        self._prepared.append((decode_seconds, preprocess_seconds))

    def inferred(self, seconds: float, probas: list[float], labels: list[str]) -> None:
        """One model call: its time, and each image's probability and (bounded) label."""
        self._inferred.append((seconds, probas, labels))

    def failed(self, kind: str) -> None:
        self._errors.labels(model=self._model, kind=kind).inc()  # rare: written at once

    def runs_on(self, providers: tuple[str, ...]) -> None:
        """The execution providers the model's current version runs on; () once unloaded."""
        for provider in sorted({*self._providers, *providers}):
            gauge = self._execution_providers.labels(model=self._model, provider=provider)
            gauge.set(1 if provider in providers else 0)
        self._providers = providers

    def flush(self) -> None:
        with self._lock:
            for decode_seconds, preprocess_seconds in _drained(self._prepared):
                self._decode.observe(decode_seconds)
                self._preprocess.observe(preprocess_seconds)
            for seconds, probas, labels in _drained(self._inferred):
                self._infer.observe(seconds)
                for proba, label in zip(probas, labels, strict=True):
                    self._label_counts[label] = self._label_counts.get(label, 0) + 1
                    self._proba.observe(proba)
            for tally in (self._proba, self._decode, self._preprocess, self._infer):
                tally.flush()
            for label, count in self._label_counts.items():
                self._predictions.labels(model=self._model, label=label).inc(count)
            self._label_counts.clear()


def _drained(pending: deque[T]) -> Iterator[T]:
    """Every item of ``pending``, oldest first, while other threads may still append to it."""
    while True:
        try:
            yield pending.popleft()
        except IndexError:
            return


class _Flushable(Protocol):
    def flush(self) -> None: ...


_FLUSHED: list[_Flushable] = []


def flush_periodically(metrics: _Flushable) -> None:
    """Write ``metrics`` out every FLUSH_SECONDS, from one thread for all of them."""
    _FLUSHED.append(metrics)
    if len(_FLUSHED) == 1:
        threading.Thread(target=_flush_every_period, name="metrics-flush", daemon=True).start()


def _flush_every_period() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush_all()
        except Exception:  # the queues are bounded, but this thread must live on to drain them
            logger.exception("writing the metrics out failed; retrying in %g s", FLUSH_SECONDS)


def flush_all() -> None:
    for metrics in list(_FLUSHED):
        metrics.flush()


class FlushBeforeScrape:
    """ASGI middleware: GET /metrics sees every request and prediction this worker has
    counted so far."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            flush_all()
        await self.app(scope, receive, send)


def error_kind(error: Exception) -> str:
    """The metric label for an exception class: NotAnImageError -> "not_an_image"."""
    name = type(error).__name__.removesuffix("Error") or "error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@cache
def route_metrics() -> RouteMetrics:
    return RouteMetrics()


@dataclass(frozen=True)
class _PredictionFamilies:
    predictions: Any
    proba: Any
    stage_seconds: Any
    errors: Any
    execution_providers: Any


@cache
def _prediction_families() -> _PredictionFamilies:
    from prometheus_client import Counter, Gauge, Histogram

    return _PredictionFamilies(
        predictions=Counter(
            "dlops_predictions",
            "Images classified, by model and the label answered (by ranges of class indices for "
            "models of more than 50 classes)",
            ["model", "label"],
        ),
        proba=Histogram(
            "dlops_prediction_proba",
            "P(positive) for a binary model, the top-1 probability for a multi-class one; one "
            "observation per image",
            ["model"],
            buckets=PROBA_BUCKETS,
        ),
        stage_seconds=Histogram(
            "dlops_stage_duration_seconds",
            "Time per stage: decode (bytes to pixels, per image), preprocess (to the model's "
            "input, per image), infer (the model, per call of a batch)",
            ["model", "stage"],
            buckets=STAGE_BUCKETS,
        ),
        errors=Counter(
            "dlops_errors",
            "Failed requests and images, by model and kind (not_an_image, no_ink, "
            "image_too_large, request_entity_too_large, unsupported_media_type, unauthorized, ...)",
            ["model", "kind"],
        ),
        execution_providers=Gauge(
            "dlops_model_execution_provider",
            "1 for each onnxruntime execution provider a served model runs on (DLOPS_PROVIDERS)",
            ["model", "provider"],
            multiprocess_mode="livemax",
        ),
    )


@cache
def prediction_metrics(model: str = "") -> PredictionMetrics:
    """The metrics of the model ``model`` ("": requests refused before a model was chosen)."""
    return PredictionMetrics(model)
