"""The model spec: everything the service needs to know about a model, decided once at import.

``import_model.py`` resolves it (dlops/model/resolve/) and stores it as ``spec.json`` in the model's
entry of the BentoML model store; the service reads it back with :func:`load_spec` and never
guesses at run time. No BentoML, onnx or onnxruntime here: the spec is plain data.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlops.model.steps import Digit, Step, StepError, check_steps, steps_from_json, steps_to_json

SPEC_FILE_NAME = "spec.json"
# Bumped when the stored format changes in a way an older service could not read.
SPEC_VERSION = 2

DTYPES = ("uint8", "float32", "float16")
LAYOUTS = ("NCHW", "NHWC", "NHW")
COLORS = ("RGB", "BGR", "L")
ACTIVATIONS = ("sigmoid", "softmax", "none")
# single: one class per image (argmax, or P(positive) against the threshold for one unit);
# multi: independent labels, every one at or above the threshold is answered.
TASKS = ("single", "multi")
DEFAULT_TOP_K = 5


class SpecError(ValueError):
    """A spec that cannot be served: the message names the field and what it must be."""


@dataclass(frozen=True)
class InputSpec:
    """The model's one image input, as the graph declares it."""

    name: str
    dtype: str  # one of DTYPES
    layout: str  # one of LAYOUTS
    channels: int  # 1 or 3 (always 1 for NHW)
    height: int
    width: int
    # The most images one model call takes: None for a dynamic batch dimension, 1 for a graph
    # whose batch is fixed at 1 (served one image per call).
    max_batch: int | None

    def shape(self, batch: int | str = -1) -> list[int | str]:
        """The tensor's shape with ``batch`` images, in the input's own layout."""
        if self.layout == "NCHW":
            return [batch, self.channels, self.height, self.width]
        if self.layout == "NHWC":
            return [batch, self.height, self.width, self.channels]
        return [batch, self.height, self.width]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded image becomes one example of the input tensor.

    The picture is converted to ``color`` (BGR: RGB with the channels reversed at the end), the
    ``steps`` (dlops/model/steps.py) bring it to the input's size, then pixels (0..255) become
    ``(pixel * scale - mean) / std`` per channel, in the input's dtype.
    """

    color: str  # one of COLORS
    steps: tuple[Step, ...]
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def is_identity(self) -> bool:
        """True when pixels reach the model as they are (no scaling or normalisation)."""
        return self.scale == 1.0 and not any(self.mean) and all(s == 1.0 for s in self.std)

    @property
    def is_digit(self) -> bool:
        """The MNIST pipeline: the service's page and API then speak of drawn digits."""
        return isinstance(self.steps[0], Digit)


@dataclass(frozen=True)
class PostprocessSpec:
    """How the model's output becomes an answer.

    One output unit is a binary model: P(positive) against ``threshold``, ``labels`` being
    (negative, positive). K units are K classes, ``labels`` one per class.
    """

    output: str
    classes: int  # K: the output's units per image (1 for a binary model)
    activation: str  # one of ACTIVATIONS; "none": the graph already ends in Softmax/Sigmoid
    labels: tuple[str, ...]
    threshold: float | None  # binary and multi-label models
    top_k: int  # multi-class: how many classes an answer lists by default
    task: str = "single"  # one of TASKS

    @property
    def is_binary(self) -> bool:
        return self.classes == 1

    @property
    def is_multi_label(self) -> bool:
        return self.task == "multi"


@dataclass(frozen=True)
class ModelSpec:
    input: InputSpec
    preprocess: PreprocessSpec
    postprocess: PostprocessSpec
    # Where each value came from ("flag --mean", "metadata_props['character']", "graph", ...),
    # by dotted field name: shown by import_model.py, kept for whoever reads the stored spec.
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess"]["steps"] = steps_to_json(self.preprocess.steps)
        return {"spec_version": SPEC_VERSION, **data}

    def identity(self) -> dict[str, Any]:
        """What decides how the model is served: equal identities serve identically."""
        data = self.to_json()
        data.pop("sources")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        try:
            version = data["spec_version"]
            if version != SPEC_VERSION:
                raise SpecError(
                    f"spec_version {version!r} is not {SPEC_VERSION}; import the model again "
                    "with this release's import_model.py"
                )
            preprocess = dict(data["preprocess"])
            preprocess["mean"] = tuple(preprocess["mean"])
            preprocess["std"] = tuple(preprocess["std"])
            preprocess["steps"] = steps_from_json(preprocess["steps"], "preprocess.steps")
            postprocess = dict(data["postprocess"])
            postprocess["labels"] = tuple(postprocess["labels"])
            spec = cls(
                input=InputSpec(**data["input"]),
                preprocess=PreprocessSpec(**preprocess),
                postprocess=PostprocessSpec(**postprocess),
                sources=dict(data.get("sources", {})),
            )
        except (KeyError, TypeError, StepError) as error:
            raise SpecError(f"the stored spec is incomplete or malformed ({error!r})") from None
        validate(spec)
        return spec


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> None:
    _require(value in allowed, f"{what} is {value!r}; expected one of {', '.join(allowed)}")


def validate(spec: ModelSpec) -> None:
    """Refuse a spec the service could not serve correctly, naming the field at fault."""
    source, pre, post = spec.input, spec.preprocess, spec.postprocess
    _one_of(source.dtype, DTYPES, "input dtype")
    _one_of(source.layout, LAYOUTS, "input layout")
    _require(source.channels in (1, 3), f"input channels is {source.channels}; expected 1 or 3")
    _require(
        source.layout != "NHW" or source.channels == 1, "an NHW input has one channel, not three"
    )
    _require(
        source.height > 0 and source.width > 0,
        f"input size is {source.height}x{source.width}; expected positive whole numbers",
    )
    _require(
        source.max_batch in (None, 1), f"max_batch is {source.max_batch!r}; expected None or 1"
    )
    _one_of(pre.color, COLORS, "preprocess color")
    _require(
        (pre.color == "L") == (source.channels == 1),
        f"color {pre.color} does not fit an input of {source.channels} channel(s): use L for "
        "one channel, RGB or BGR for three",
    )
    try:
        check_steps(pre.steps, source.height, source.width, source.channels)
    except StepError as error:
        raise SpecError(f"preprocess.steps: {error}") from None
    _require(
        len(pre.mean) == source.channels and len(pre.std) == source.channels,
        f"mean {list(pre.mean)} and std {list(pre.std)} need {source.channels} value(s) each, "
        "one per channel",
    )
    numbers = (pre.scale, *pre.mean, *pre.std)
    _require(all(math.isfinite(n) for n in numbers), "scale, mean and std must be finite numbers")
    _require(pre.scale > 0 and all(s > 0 for s in pre.std), "scale and std must be above 0")
    _require(
        source.dtype != "uint8" or pre.is_identity,
        "a uint8 input takes pixels as they are: scale 1, mean 0 and std 1 (the graph must "
        "normalise them itself)",
    )
    _one_of(post.activation, ACTIVATIONS, "activation")
    _one_of(post.task, TASKS, "task")
    _require(post.classes >= 1, f"classes is {post.classes}; expected at least 1")
    if post.is_multi_label:
        _require(
            post.classes >= 2 and len(post.labels) == post.classes,
            f"a multi-label model needs one label per output unit; got {len(post.labels)} labels "
            f"for {post.classes} units",
        )
        _require(
            post.activation != "softmax",
            "a multi-label model's units are independent: sigmoid or none, not softmax",
        )
        _require(
            post.threshold is not None and 0.0 < post.threshold < 1.0,
            f"threshold is {post.threshold!r}; expected a number between 0 and 1",
        )
    elif post.is_binary:
        _require(
            len(post.labels) == 2,
            f"a binary model (one output unit) needs 2 labels, negative then positive; got "
            f"{len(post.labels)}",
        )
        _require(post.activation != "softmax", "softmax over one output unit is always 1")
        _require(
            post.threshold is not None and 0.0 < post.threshold < 1.0,
            f"threshold is {post.threshold!r}; expected a number between 0 and 1",
        )
    else:
        _require(
            len(post.labels) == post.classes,
            f"{len(post.labels)} labels for {post.classes} classes; expected one label per class",
        )
        _require(
            post.activation != "sigmoid",
            "sigmoid is for binary models (one output unit) and multi-label ones",
        )
    _require(post.top_k >= 1, f"top_k is {post.top_k}; expected at least 1")
    _require(all(isinstance(label, str) for label in post.labels), "labels must be strings")


def save_spec(spec: ModelSpec, directory: Path) -> Path:
    path = directory / SPEC_FILE_NAME
    path.write_text(json.dumps(spec.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_spec(directory: Path) -> ModelSpec:
    """The spec stored with a model; SpecError when it is missing or cannot be served."""
    path = directory / SPEC_FILE_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path} is missing (the model was imported by an older release)") from None
    except ValueError as error:
        raise SpecError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return ModelSpec.from_json(data)


@dataclass(frozen=True)
class StoredModel:
    """One version of a model in the store, checked intact, with its spec."""

    name: str
    version: str
    path: Path
    spec: ModelSpec
    # The graph's files (weights included): onnxruntime holds at least this much once loaded.
    size_bytes: int = 0
