"""Prometheus metrics of the direct routes, scraped at /metrics beside BentoML's own.

Requests answered by a direct route never reach BentoML's metrics middleware, so they are
counted here. prometheus_client is imported on first use, not at import time: BentoML's workers
set PROMETHEUS_MULTIPROC_DIR after importing the service module, and prometheus_client picks its
single- or multi-process storage when it is first imported.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# Latency buckets from 0.5 ms (a digit PNG) to 10 s (a 40 MP photo), in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


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


@cache
def route_metrics() -> RouteMetrics:
    return RouteMetrics()
