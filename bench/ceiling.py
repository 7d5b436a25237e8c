"""The ceiling: the service's own decode, preprocessing and inference code in this process, no HTTP.

What no server built on this code can beat on one core; the distance from it to a subject's
throughput is what HTTP, the framework and the process model cost. The batch-size sweep says how
much of a request's cost batching several requests into one model call could save at best.
"""

from __future__ import annotations

import statistics
import timeit
from dataclasses import dataclass

import numpy as np

from bench.servers import MODEL
from dlops import config
from dlops.imaging import to_model_input
from dlops.inference import BinaryImageClassifier

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
    infer_us: float  # one model call on one image, with the sigmoid and the labels
    batch_costs: list[BatchCost]  # inference alone, for each batch size of SWEEP


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


def _batch_costs(classifier: BinaryImageClassifier, pixels: np.ndarray) -> list[BatchCost]:
    costs = []
    for size in SWEEP:
        # The same preprocessed image repeated: onnxruntime's cost depends on the shape, not on
        # the pixels, and the copy is made once, outside the timed call.
        batch = np.ascontiguousarray(np.broadcast_to(pixels, (size, *pixels.shape)))
        seconds = _typical_seconds_per_call(timeit.Timer(lambda b=batch: classifier.predict(b)))
        costs.append(BatchCost(batch=size, infer_us_per_image=seconds / size * 1e6))
    return costs


def measure_ceiling(png: bytes) -> Ceiling:
    classifier = BinaryImageClassifier(MODEL, config.DEFAULT_THRESHOLD, config.DEFAULT_LABELS)
    size = classifier.image_size
    classifier.warm_up()

    def preprocess() -> np.ndarray:
        return to_model_input(png, size=size, max_pixels=config.MAX_IMAGE_PIXELS)

    one = np.expand_dims(preprocess(), 0)
    single = _seconds_per_call(
        timeit.Timer(lambda: classifier.predict(np.expand_dims(preprocess(), 0)))
    )
    batched = _seconds_per_call(
        timeit.Timer(lambda: classifier.predict(np.stack([preprocess() for _ in range(BATCH)])))
    )
    return Ceiling(
        single_images_per_s=1.0 / single,
        batched_images_per_s=BATCH / batched,
        preprocess_us=_seconds_per_call(timeit.Timer(preprocess)) * 1e6,
        infer_us=_seconds_per_call(timeit.Timer(lambda: classifier.predict(one))) * 1e6,
        batch_costs=_batch_costs(classifier, preprocess()),
    )
