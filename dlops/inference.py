"""Loading an ONNX binary image classifier and running it: no HTTP and no BentoML here.

The model contract: one input of dtype uint8 and shape [N, H, W] (a batch of grayscale images,
white ink on black, as MNIST), one output with one logit per image ([N, 1] or [N]).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlops import config

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(config.LOGGER_NAME)

_ONNX_TO_NUMPY_DTYPE = {"tensor(uint8)": "uint8"}


class SignatureError(ValueError):
    """The ONNX graph does not have the inputs and outputs this service feeds and reads."""


@dataclass(frozen=True)
class Signature:
    input_name: str
    input_dtype: str
    input_shape: tuple[int | str, ...]  # symbolic dimensions (the batch) are kept as names
    output_name: str

    @property
    def image_size(self) -> int:
        """The side of the square images the model takes (28 for MNIST)."""
        return int(self.input_shape[1])


@dataclass(frozen=True)
class Prediction:
    proba: float
    label: str


# Told of every model call: its duration in seconds and each image's (probability, label).
InferenceObserver = Callable[[float, list[tuple[float, str]]], None]


def open_session(model_path: Path | str) -> ort.InferenceSession:
    # Imported here, not at the top: `bentoml serve` imports the service module in its arbiter
    # process too, which never runs the model; onnxruntime would cost it ~35 MiB of memory.
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One image costs ~20 µs: spreading that over a thread pool only adds hand-off jitter
    # (p99 spikes of 1-4 ms were measured with the default pool), and workers scale by process.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def read_signature(session: ort.InferenceSession) -> Signature:
    """Check the graph has one uint8 [N, H, W] input and one output, and describe them."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise SignatureError(
            f"expected exactly one input and one output, found {len(inputs)} input(s) "
            f"{[i.name for i in inputs]} and {len(outputs)} output(s) {[o.name for o in outputs]}"
        )
    graph_input, graph_output = inputs[0], outputs[0]
    shape = tuple(graph_input.shape)
    image_dims = shape[1:]
    if (
        graph_input.type not in _ONNX_TO_NUMPY_DTYPE
        or len(shape) != 3
        or not all(isinstance(dim, int) and dim > 0 for dim in image_dims)
        or image_dims[0] != image_dims[1]
    ):
        raise SignatureError(
            f"input {graph_input.name!r} is {graph_input.type} {list(shape)}; expected an image "
            "batch of uint8 [N, size, size] with a fixed, square image size"
        )
    output_shape = tuple(graph_output.shape)
    if len(output_shape) not in (1, 2) or (
        len(output_shape) == 2 and output_shape[1] not in (1, None)
    ):
        raise SignatureError(
            f"output {graph_output.name!r} has shape {list(output_shape)}; expected one logit per "
            "image, [N, 1] or [N]"
        )
    return Signature(
        input_name=graph_input.name,
        input_dtype=_ONNX_TO_NUMPY_DTYPE[graph_input.type],
        input_shape=tuple(dim if dim is not None else "N" for dim in shape),
        output_name=graph_output.name,
    )


def sigmoid(logit: float) -> float:
    # Plain floats: for one image math.exp is several times cheaper than a numpy round trip.
    # Clamping keeps exp() finite for extreme logits, where the answer is 0 or 1 anyway.
    return 1.0 / (1.0 + math.exp(-min(max(logit, -60.0), 60.0)))


class BinaryImageClassifier:
    """An ONNX session plus the threshold and labels that turn its logit into an answer."""

    def __init__(
        self,
        model_path: Path | str,
        threshold: float,
        labels: tuple[str, str],
        observer: InferenceObserver | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0 or math.isnan(threshold):
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.session = open_session(model_path)
        self.signature = read_signature(self.session)
        self.threshold = threshold
        self.negative_label, self.positive_label = labels
        self.observer = observer

    @classmethod
    def from_metadata(
        cls,
        model_dir: Path,
        metadata: dict[str, Any],
        model_file: str,
        observer: InferenceObserver | None = None,
    ) -> BinaryImageClassifier:
        """Build from a model store entry written by import_model.py."""
        labels = metadata["labels"]
        return cls(
            model_dir / model_file,
            float(metadata["threshold"]),
            (labels[0], labels[1]),
            observer=observer,
        )

    @property
    def image_size(self) -> int:
        return self.signature.image_size

    def logits(self, images: np.ndarray) -> np.ndarray:
        """images: uint8 [N, H, W]; returns float logits [N]."""
        output = self.session.run(
            [self.signature.output_name], {self.signature.input_name: images}
        )[0]
        return np.asarray(output).reshape(len(images))

    def predict(self, images: np.ndarray) -> list[Prediction]:
        started = time.perf_counter()
        logits = self.logits(images).tolist()
        seconds = time.perf_counter() - started
        answers = [
            (p, self.positive_label if p > self.threshold else self.negative_label)
            for p in map(sigmoid, logits)
        ]
        if self.observer is not None:
            self.observer(seconds, answers)
        return [Prediction(proba=proba, label=label) for proba, label in answers]

    def warm_up(self) -> None:
        """Run once so the first client does not pay for onnxruntime's lazy initialisation."""
        size = self.image_size
        observer, self.observer = self.observer, None  # not a prediction anyone asked for
        try:
            self.predict(np.zeros((1, size, size), dtype=np.uint8))
        finally:
            self.observer = observer


class ModelNotReady(RuntimeError):
    """The classifier is still loading, or failed to load."""


class BackgroundLoader:
    """Loads and warms the classifier on a thread, so the server answers while it does.

    Health probes get a prompt answer (live, not yet ready) instead of a hanging connection, and
    requests that arrive early wait for the model rather than fail.
    """

    def __init__(self, load: Callable[[], BinaryImageClassifier]) -> None:
        self._load = load
        self._done = threading.Event()
        self._classifier: BinaryImageClassifier | None = None
        self._failure: str | None = None
        threading.Thread(target=self._run, name="model-loader", daemon=True).start()

    def _run(self) -> None:
        try:
            classifier = self._load()
            classifier.warm_up()
            self._classifier = classifier
        except Exception as error:  # reported to every caller instead of dying unseen
            self._failure = f"{type(error).__name__}: {error}"
            logger.error("the model failed to load: %s", self._failure)
        finally:
            self._done.set()

    @property
    def is_ready(self) -> bool:
        return self._classifier is not None

    def get(self, timeout: float) -> BinaryImageClassifier:
        self._done.wait(timeout)
        if self._classifier is not None:
            return self._classifier
        if self._failure is not None:
            raise ModelNotReady(f"the model failed to load ({self._failure})")
        raise ModelNotReady(f"the model is still loading after {timeout:.0f} s")
