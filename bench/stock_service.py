"""The soak's baseline: the digit classifier as BentoML's own examples write a service.

`bentoml serve bench.stock_service:StockDigitClassifier` (bench/soak.py starts it). No dlops code:
`@bentoml.service` with one `@bentoml.api` taking the upload as a `Path`, the same ONNX model from
the same BentoML model store read with a default onnxruntime session, and the least preprocessing
that gives the model its input (Pillow -> 28x28 grayscale uint8). Do not optimise it: it stands
for what a stock BentoML 1.4.39 service does under load.

Switches, read from the environment when the module is imported, to find where stock's memory
grows (bench/soak.py sets them, one per variant):

- ``STOCK_UPLOAD=image``: the upload as a ``PIL.Image.Image`` instead of a ``Path``: BentoML
  then opens the uploaded bytes in memory instead of writing a temporary file per request.
  (``bytes`` is no alternative: stock BentoML 1.4.39 passes a multipart field typed ``bytes``
  through ``json.loads``, and a PNG's first byte makes that a 500.)
- ``STOCK_METRICS=0``: BentoML's Prometheus metrics off (the service config
  ``metrics: enabled: false``).
- ``STOCK_TIMEOUT=SECONDS``: the service config ``traffic: timeout`` (BentoML's default: 60 s).
- ``STOCK_CANCEL_TIMER=1``: BentoML's ``TimeoutMiddleware`` patched to cancel its timer when the
  request is done. Unpatched, ``loop.call_later`` keeps the timer, and with it a copy of the
  request's context (the request, its OpenTelemetry span, BentoML's request context), alive for
  the whole timeout after the answer has gone.
- ``STOCK_TRACEMALLOC=1``: trace Python allocations in the worker; ``POST /tracemalloc`` collects
  the cyclic garbage, then answers the tracebacks whose live allocations grew most since the
  previous call (the first call sets the base).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import tracemalloc
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from PIL import Image
from starlette.responses import JSONResponse

UPLOAD_AS_IMAGE = os.environ.get("STOCK_UPLOAD", "path") == "image"
METRICS_ENABLED = os.environ.get("STOCK_METRICS", "1") != "0"
TRACE_ALLOCATIONS = os.environ.get("STOCK_TRACEMALLOC", "0") == "1"
TIMEOUT_SECONDS = os.environ.get("STOCK_TIMEOUT")
CANCEL_TIMER = os.environ.get("STOCK_CANCEL_TIMER", "0") == "1"
MODEL_TAG = "binary_classifier_3:latest"
THRESHOLD = 0.5
# Frames kept per traced allocation: enough to tell BentoML's, Starlette's and our lines apart.
TRACE_FRAMES = 8
TRACE_TOP_LINES = 25


async def _timeout_with_cancelled_timer(self: Any, scope: Any, receive: Any, send: Any) -> None:
    """BentoML 1.4.39's TimeoutMiddleware.__call__ (bentoml/_internal/server/http/traffic.py),
    changed in one place: the timer is cancelled once the request is done."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            message = f"Not able to process the request in {self.timeout} seconds"
            await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


if CANCEL_TIMER:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    TimeoutMiddleware.__call__ = _timeout_with_cancelled_timer  # type: ignore[method-assign]

SERVICE_CONFIG: dict[str, Any] = {"metrics": {"enabled": METRICS_ENABLED}}
if TIMEOUT_SECONDS:
    SERVICE_CONFIG["traffic"] = {"timeout": float(TIMEOUT_SECONDS)}


@bentoml.service(**SERVICE_CONFIG)
class StockDigitClassifier:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(self.model.path_of("model.onnx"))
        self.input_name = self.session.get_inputs()[0].name
        self.trace_base: tracemalloc.Snapshot | None = None
        if TRACE_ALLOCATIONS:
            tracemalloc.start(TRACE_FRAMES)

    def classify(self, image: Image.Image) -> dict[str, Any]:
        pixels = np.asarray(image.convert("L").resize((28, 28)), dtype=np.uint8)
        (logit,) = self.session.run(None, {self.input_name: pixels[np.newaxis]})[0].ravel()
        proba = 1 / (1 + math.exp(-float(logit)))
        return {"proba": proba, "label": "3" if proba > THRESHOLD else "no 3"}

    if UPLOAD_AS_IMAGE:

        @bentoml.api
        def predict(self, file: Image.Image) -> dict[str, Any]:
            with file:
                return self.classify(file)

    else:

        @bentoml.api
        def predict(self, file: Path) -> dict[str, Any]:
            with Image.open(file) as image:
                return self.classify(image)

    if TRACE_ALLOCATIONS:

        @bentoml.api(route="/tracemalloc")
        def trace_growth(self) -> dict[str, Any]:
            """The top growth of live allocations, by traceback, since the previous call."""
            # Garbage waiting for the cycle collector is not a leak: only what survives counts.
            collected = gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            base, self.trace_base = self.trace_base, snapshot
            traced, peak = tracemalloc.get_traced_memory()
            top = snapshot.compare_to(base, "traceback") if base is not None else []
            return {
                "gc_collected": collected,
                "traced_bytes": traced,
                "peak_bytes": peak,
                "top": [
                    {
                        "size_diff": stat.size_diff,
                        "count_diff": stat.count_diff,
                        "size": stat.size,
                        "traceback": [f"{f.filename}:{f.lineno}" for f in stat.traceback],
                    }
                    for stat in top[:TRACE_TOP_LINES]
                ],
            }
