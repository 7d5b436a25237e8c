"""The ceiling: the service's own decode, preprocessing and inference code in this process, no HTTP.

What no server built on this code can beat on one core; the distance from it to a subject's
throughput is what HTTP, the framework and the process model cost. The batch-size sweep says how
much of a request's cost batching several requests into one model call could save at best.

The model is read from a model store entry made by ``import_model.py`` (``bench.servers`` imports it
into a throwaway BentoML home): its ONNX file and its stored spec, exactly what ``bentoml serve``
loads. :class:`Pipeline` is the request core's work without the core (dlops/pipeline/core.py):
``decode_image`` -> ``Preprocessor`` -> ``Classifier.run`` -> ``Postprocessor``.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlops import config
from dlops.model.spec import ModelSpec, load_spec
from dlops.pipeline.decode import decode_image
from dlops.pipeline.inference import Classifier
from dlops.pipeline.postprocess import Postprocessor
from dlops.pipeline.preprocess import Preprocessor

BATCH = 64  # images per model call in the batched ceiling, and per /predict_batch request
SWEEP = (1, 2, 4, 8, 16, 32, 64)
REPEATS = 3
SWEEP_REPEATS = 7
SWEEP_LOOP_SECONDS = 0.05


@dataclass(frozen=True)
class BatchCost:
    batch: int
    infer_us_per_image: float  # one model call on ``batch`` preprocessed images, per image


@dataclass(frozen=True)
class Ceiling:
    single_images_per_s: float  # decode + preprocess + infer, one image per model call
    batched_images_per_s: float  # decode + preprocess each of BATCH images, one model call
    preprocess_us: float  # decode + preprocess of one image
    infer_us: float  # one model call on one image, with the postprocessing and the labels
    batch_costs: list[BatchCost]  # inference alone, for each batch size of SWEEP


class Pipeline:
    """One stored model's serving path in this process: bytes -> example -> answers."""

    def __init__(self, entry: Path, intra_op_threads: int = 1) -> None:
        self.spec: ModelSpec = load_spec(entry)
        self.classifier = Classifier(entry / config.MODEL_FILE_NAME, self.spec, intra_op_threads)
        self.preprocessor = Preprocessor(self.spec)
        self.postprocessor = Postprocessor(self.spec.postprocess)
        self.classifier.warm_up()

    def prepare(self, data: bytes) -> np.ndarray:
        """Upload bytes -> one example of the input tensor, as the core's ``prepare`` does."""
        return self.preprocessor(decode_image(data))

    def infer(self, batch: np.ndarray) -> list[dict[str, Any]]:
        """One model call, then the probabilities and the answers the routes send."""
        probabilities = self.postprocessor.probabilities(self.classifier.run(batch))
        return [self.postprocessor.answer(row) for row in probabilities]


def _seconds_per_call(timer: timeit.Timer) -> float:
    # autorange picks a loop count of at least 0.2 s; the best of a few such loops is the least
    # disturbed by anything else running, which is what a ceiling should be.
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=REPEATS, number=number)) / number


def _typical_seconds_per_call(timer: timeit.Timer) -> float:
    # The sweep's figures are subtracted from each other, so each should be a typical loop rather
    # than the luckiest one: the median of several. Loops shorter than autorange's 0.2 s keep the
    # sweep of seven sizes to a few seconds per round.
    number = max(1, round(SWEEP_LOOP_SECONDS / timer.timeit(number=1)))
    return statistics.median(timer.repeat(repeat=SWEEP_REPEATS, number=number)) / number


def batch_costs(
    infer: Callable[[np.ndarray], Any], example: np.ndarray, sizes: Sequence[int] = SWEEP
) -> list[BatchCost]:
    costs = []
    for size in sizes:
        # The same preprocessed image repeated: onnxruntime's cost depends on the shape, not on
        # the pixels, and the copy is made once, outside the timed call.
        batch = np.ascontiguousarray(np.broadcast_to(example, (size, *example.shape)))
        seconds = _typical_seconds_per_call(timeit.Timer(lambda b=batch: infer(b)))
        costs.append(BatchCost(batch=size, infer_us_per_image=seconds / size * 1e6))
    return costs


def measure_ceiling(png: bytes, entry: Path) -> Ceiling:
    """The ceiling for the model stored at ``entry`` (a model store entry's directory)."""
    pipeline = Pipeline(entry)
    prepare, infer = pipeline.prepare, pipeline.infer
    one = np.expand_dims(prepare(png), 0)
    single = _seconds_per_call(timeit.Timer(lambda: infer(np.expand_dims(prepare(png), 0))))
    batched = _seconds_per_call(
        timeit.Timer(lambda: infer(np.stack([prepare(png) for _ in range(BATCH)])))
    )
    return Ceiling(
        single_images_per_s=1.0 / single,
        batched_images_per_s=BATCH / batched,
        preprocess_us=_seconds_per_call(timeit.Timer(lambda: prepare(png))) * 1e6,
        infer_us=_seconds_per_call(timeit.Timer(lambda: infer(one))) * 1e6,
        batch_costs=batch_costs(infer, prepare(png)),
    )
