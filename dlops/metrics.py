"""Prometheus metrics of dlops, scraped at /metrics beside BentoML's own.

Requests answered by a direct route never reach BentoML's metrics middleware, so they are
counted here, with what the predictions were, where the time went and why requests failed.
prometheus_client is imported on first use, not at import time: BentoML's workers
set PROMETHEUS_MULTIPROC_DIR after importing the service module, and prometheus_client picks its
single- or multi-process storage when it is first imported.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

# Latency buckets from 0.5 ms (a digit PNG) to 10 s (a 40 MP photo), in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# A stage of one image takes from ~10 µs (inference of a digit) to seconds (decoding a photo).
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 0.01, 0.05, 0.25, 1, 10)
# Probabilities: fine near 0 and 1, where a healthy model's answers pile up; a drift of the inputs
# shows as answers moving into the middle buckets.
PROBA_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class RouteMetrics:
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
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self._requests.labels(path=path, status=str(status)),
                self._seconds.labels(path=path),
            )
            self._children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)


class PredictionMetrics:
    """What the model answered, where each image's time went, and why requests failed."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self._predictions = Counter(
            "dlops_predictions", "Images classified, by the label answered", ["label"]
        )
        self._proba = Histogram(
            "dlops_prediction_proba",
            "The probability the model gave the positive label, one observation per image",
            buckets=PROBA_BUCKETS,
        )
        stage_seconds = Histogram(
            "dlops_stage_duration_seconds",
            "Time per stage: decode (bytes to pixels, per image), preprocess (to the MNIST "
            "format, per image), infer (the model, per call of a batch)",
            ["stage"],
            buckets=STAGE_BUCKETS,
        )
        self._decode = stage_seconds.labels(stage="decode")
        self._preprocess = stage_seconds.labels(stage="preprocess")
        self._infer = stage_seconds.labels(stage="infer")
        self._errors = Counter(
            "dlops_errors",
            "Failed requests and images, by kind (not_an_image, no_ink, image_too_large, "
            "request_entity_too_large, unsupported_media_type, unauthorized, ...)",
            ["kind"],
        )
        self._labels: dict[str, Any] = {}

    def prepared(self, decode_seconds: float, preprocess_seconds: float) -> None:
        self._decode.observe(decode_seconds)
        self._preprocess.observe(preprocess_seconds)

    def inferred(self, seconds: float, answers: list[tuple[float, str]]) -> None:
        """One model call: its time, and each image's (probability, label)."""
        self._infer.observe(seconds)
        for proba, label in answers:
            counter = self._labels.get(label)
            if counter is None:
                counter = self._labels[label] = self._predictions.labels(label=label)
            counter.inc()
            self._proba.observe(proba)

    def failed(self, kind: str) -> None:
        self._errors.labels(kind=kind).inc()


def error_kind(error: Exception) -> str:
    """The metric label for an exception class: NotAnImageError -> "not_an_image"."""
    name = type(error).__name__.removesuffix("Error") or "error"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@cache
def route_metrics() -> RouteMetrics:
    return RouteMetrics()


@cache
def prediction_metrics() -> PredictionMetrics:
    return PredictionMetrics()
