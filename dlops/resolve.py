"""Decide a model's spec at import time, from the graph, what sits beside it and the flags.

Layers, lowest first, each later one overriding field by field: a preset, what the graph implies,
ONNX ``metadata_props``, sidecar files beside the model, command-line flags. Every value records
its source; what could not be decided is refused with :class:`ImportRefused`. Used by
import_model.py only (it needs onnx and onnxruntime, which the service does not).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from dlops.spec import (
    ACTIVATIONS,
    COLORS,
    DEFAULT_TOP_K,
    INTERPOLATIONS,
    LAYOUTS,
    MODES,
    RESAMPLINGS,
    InputSpec,
    ModelSpec,
    PostprocessSpec,
    PreprocessSpec,
    SpecError,
    validate,
)

PRESETS = ("imagenet", "digit")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's default crop_pct: resize to floor(size / 0.875) (256 for 224), then centre-crop.
CROP_PCT = 0.875
# A one-channel square input up to this side is taken for a digit (MNIST-style) model.
DIGIT_MAX_SIDE = 64
DEFAULT_THRESHOLD = 0.5
# Hugging Face ConvNeXt warps instead of cropping at and above this shortest_edge.
CONVNEXT_WARP_SIZE = 384
DTYPE_NAMES = {
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
}
# Pillow's resampling codes, as Hugging Face's preprocessor_config.json writes them.
PILLOW_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# ONNX metadata_props conventions (onnx/docs/MetadataProps.md).
PIXEL_FORMAT_KEY = "Image.BitmapPixelFormat"
PIXEL_RANGE_KEY = "Image.NominalPixelRange"
PIXEL_FORMATS = {"Gray8": "L", "Rgb8": "RGB", "Bgr8": "BGR"}
PIXEL_RANGES = {  # (scale, mean, std)
    "NominalRange_0_255": (1.0, 0.0, 1.0),
    "Normalized_0_1": (1 / 255, 0.0, 1.0),
    "Normalized_1_1": (1 / 255, 0.5, 0.5),
}
LABEL_PROPS = ("labels", "classes", "names", "character")
# Nodes the walk back from the output passes through when looking for a final activation.
SHAPE_ONLY_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
TRIAL_SEED = 0
PREPROCESS_FLAGS = (
    "--preset, --mode, --resize, --interpolation, --resampling, --color, --scale, --mean, --std"
)
# paddle2onnx names the graph "PaddlePaddle Graph ..." and the values it writes "p2o.<op>...";
# Paddle's vision pipelines (PaddleOCR, PaddleClas) read images with OpenCV, so such models were
# trained on BGR images resized by cv2.
PADDLE_VALUE_PREFIX = "p2o."


class ImportRefused(Exception):
    """A model this service cannot serve, or whose spec cannot be decided; one-line message."""


@dataclass(frozen=True)
class Overrides:
    """The command line's say: None for every flag that was not given."""

    layout: str | None = None  # NCHW | NHWC | NHW
    size: tuple[int, int] | None = None  # (height, width), for a dynamic H/W
    output: str | None = None
    activation: str | None = None
    labels: str | None = None  # "a,b,c", or "@path": a file with one label per line
    threshold: float | None = None
    top_k: int | None = None
    preset: str | None = None  # imagenet | digit
    mode: str | None = None
    resize: int | None = None
    interpolation: str | None = None
    resampling: str | None = None  # pillow | opencv
    color: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Resolution:
    spec: ModelSpec  # its ``sources`` say where each value came from
    notes: tuple[str, ...]  # assumptions made, and which flags change them
    input_shape: tuple[str, ...]  # the input's shape as the graph declares it


# --- command-line values (the CLI turns ValueError into a usage error) -------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``N`` (square) or ``HxW`` as (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers, default=0) <= 0:
        raise ValueError(f"expected N or HxW in pixels (e.g. 224 or 384x288), got {text!r}")
    return (numbers[0], numbers[-1])


def parse_number(text: str) -> float:
    """A finite number, or a fraction such as ``1/255``."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            value = float(numerator) / float(denominator)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"expected a number such as 0.5 or 1/255, got {text!r}")
    return value


def parse_numbers(text: str) -> tuple[float, ...]:
    """One number for every channel, or one per channel: ``0.5`` or ``0.485,0.456,0.406``."""
    return tuple(parse_number(part.strip()) for part in text.split(","))


# --- helpers -------------------------------------------------------------------------------------


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """The declared dimensions: an int when fixed, else the symbol's name ("?" when unnamed)."""
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _shape_text(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(dim) for dim in dims) + "]"


def _fixed(dim: int | str) -> int | None:
    return dim if isinstance(dim, int) else None


def _number_text(value: float) -> str:
    if math.isclose(value, 1 / 255, rel_tol=1e-9):
        return "1/255"
    return f"{value:g}"


def _sidecar(model_path: Path, name: str) -> Path | None:
    """``<stem>.<name>`` beside the model, else ``<name>`` in its directory."""
    for candidate in (model_path.with_name(f"{model_path.stem}.{name}"), model_path.parent / name):
        if candidate.is_file():
            return candidate
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ImportRefused(f"{path.name} is not readable JSON ({first_line(error)})") from None


def _lines(text: str, strip: bool = True) -> list[str]:
    """One label per line; trailing empty lines dropped."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if strip:
        lines = [line.strip() for line in lines]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


class _Fields:
    """Values by dotted field name, each with the source that set it last."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def set(self, name: str, value: Any, source: str) -> None:
        self.values[name] = value
        self.sources[name] = source

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


# --- the model file ------------------------------------------------------------------------------


def load_model(path: Path) -> onnx.ModelProto:
    """The graph, after the ONNX checker; ImportRefused for a missing or invalid file."""
    if not path.is_file():
        raise ImportRefused("no such file (train one with `make train` or give a path)")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # the checker raises several types, protobuf's among them
        raise ImportRefused(f"not a valid ONNX model ({first_line(error)})") from None


# --- input ---------------------------------------------------------------------------------------


@dataclass
class _Input:
    name: str
    dtype: str
    dims: list[int | str]
    layout: str
    channels: int
    height: int
    width: int
    max_batch: int | None
    sources: dict[str, str] = field(default_factory=dict)

    def spec(self) -> InputSpec:
        return InputSpec(
            name=self.name,
            dtype=self.dtype,
            layout=self.layout,
            channels=self.channels,
            height=self.height,
            width=self.width,
            max_batch=self.max_batch,
        )


def _resolve_input(graph: onnx.GraphProto, overrides: Overrides) -> _Input:
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if not inputs:
        raise ImportRefused("the graph has no inputs")
    if len(inputs) > 1:
        names = ", ".join(repr(value.name) for value in inputs)
        raise ImportRefused(f"several inputs: {names}; dlops serves models with one image input")
    (value,) = inputs
    name = value.name
    if not value.type.HasField("tensor_type"):
        raise ImportRefused(f"input {name!r} is not a tensor, so not an image input")
    elem_type = value.type.tensor_type.elem_type
    dims = _dims(value)
    described = f"input {name!r} {_shape_text(dims)}"
    if elem_type not in DTYPE_NAMES:
        type_name = onnx.TensorProto.DataType.Name(elem_type).lower()
        raise ImportRefused(
            f"{described} is tensor({type_name}); expected uint8, float32 or float16 pixels"
        )
    dtype = DTYPE_NAMES[elem_type]
    sources = {"input.name": "graph", "input.dtype": "graph"}
    layout = _layout(dims, overrides.layout, described)
    sources["input.layout"] = "flag --layout" if overrides.layout else "graph"
    sources["input.channels"] = "graph"
    if layout == "NCHW":
        channels, height_dim, width_dim = dims[1], dims[2], dims[3]
    elif layout == "NHWC":
        channels, height_dim, width_dim = dims[3], dims[1], dims[2]
    else:
        channels, height_dim, width_dim = 1, dims[1], dims[2]
    assert isinstance(channels, int)
    height, width = _size(height_dim, width_dim, overrides.size, described)
    size_source = "graph" if overrides.size is None else "flag --size"
    if overrides.size is not None and _fixed(height_dim) and _fixed(width_dim):
        size_source = "graph"
    sources["input.height"] = sources["input.width"] = size_source
    batch = dims[0]
    if isinstance(batch, int) and batch > 1:
        raise ImportRefused(
            f"{described} has its batch dimension fixed at {batch}; dlops needs a dynamic batch "
            "dimension or a batch of 1"
        )
    max_batch = 1 if batch == 1 else None
    sources["input.max_batch"] = (
        "graph (batch fixed at 1)" if max_batch == 1 else "graph (dynamic batch)"
    )
    return _Input(name, dtype, dims, layout, channels, height, width, max_batch, sources)


def _layout(dims: list[int | str], flag: str | None, described: str) -> str:
    rank = len(dims)
    if flag is not None and flag not in LAYOUTS:
        raise ImportRefused(f"--layout {flag} is not one of {', '.join(LAYOUTS)}")
    if rank == 3:
        if flag not in (None, "NHW"):
            raise ImportRefused(f"--layout {flag} does not fit the rank-3 {described} (NHW)")
        return "NHW"
    if rank != 4:
        raise ImportRefused(
            f"{described} has rank {rank}, so it is not an image input: expected [N, C, H, W], "
            "[N, H, W, C] or [N, H, W]"
        )
    channels_first = dims[1] in (1, 3)
    channels_last = dims[3] in (1, 3)
    if flag == "NHW":
        raise ImportRefused(f"--layout NHW does not fit the rank-4 {described}")
    if flag == "NCHW" and not channels_first:
        raise ImportRefused(
            f"--layout NCHW does not fit {described}: dimension 1 is {dims[1]}, and the channels "
            "must be 1 or 3"
        )
    if flag == "NHWC" and not channels_last:
        raise ImportRefused(
            f"--layout NHWC does not fit {described}: dimension 3 is {dims[3]}, and the channels "
            "must be 1 or 3"
        )
    if flag is not None:
        return flag
    if channels_first and channels_last:
        raise ImportRefused(
            f"{described} has an ambiguous layout (dimensions 1 and 3 could both be channels); "
            "pass --layout NCHW or --layout NHWC"
        )
    if channels_first:
        return "NCHW"
    if channels_last:
        return "NHWC"
    raise ImportRefused(
        f"{described} is not an image input: neither dimension 1 (NCHW) nor dimension 3 (NHWC) "
        "is 1 or 3 channels"
    )


def _size(
    height_dim: int | str, width_dim: int | str, flag: tuple[int, int] | None, described: str
) -> tuple[int, int]:
    fixed_height, fixed_width = _fixed(height_dim), _fixed(width_dim)
    if flag is not None:
        height, width = flag
        if (fixed_height is not None and fixed_height != height) or (
            fixed_width is not None and fixed_width != width
        ):
            raise ImportRefused(
                f"--size {height}x{width} contradicts {described}, whose image size is "
                f"{height_dim}x{width_dim}"
            )
        return height, width
    if fixed_height is None or fixed_width is None:
        raise ImportRefused(
            f"{described} has a dynamic height or width ({height_dim}x{width_dim}); pass --size N "
            "or --size HxW, the size the model was trained at"
        )
    return fixed_height, fixed_width


# --- output, trial run, activation ---------------------------------------------------------------


def _choose_output(graph: onnx.GraphProto, flag: str | None) -> str:
    names = [value.name for value in graph.output]
    listed = ", ".join(repr(name) for name in names)
    if flag is not None:
        if flag not in names:
            raise ImportRefused(f"--output {flag!r} is not an output of the graph; it has {listed}")
        return flag
    if len(names) != 1:
        raise ImportRefused(f"several outputs: {listed}; pass --output NAME to choose the scores")
    return names[0]


def _trial(
    path: Path, source: _Input, output: str, notes: list[str]
) -> tuple[int, int | None, str]:
    """Run random images through onnxruntime: (classes K, max_batch, max_batch's source)."""
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's errors are not a public hierarchy
        raise ImportRefused(f"onnxruntime cannot open it ({first_line(error)})") from None
    rng = np.random.default_rng(TRIAL_SEED)
    spec = source.spec()
    batches = (2, 1) if source.max_batch is None else (1,)
    failures: list[str] = []
    for batch in batches:
        shape = [int(dim) for dim in spec.shape(batch)]
        if source.dtype == "uint8":
            example = rng.integers(0, 256, size=shape, dtype=np.uint8)
        else:
            example = rng.random(shape).astype(source.dtype)
        try:
            (scores,) = session.run([output], {source.name: example})
        except Exception as error:
            failures.append(first_line(error))
            continue
        classes = _classes(np.asarray(scores), batch, output)
        max_batch, max_batch_source = source.max_batch, source.sources["input.max_batch"]
        if failures:
            max_batch, max_batch_source = 1, "trial run (a batch of 2 failed)"
            notes.append(
                f"a trial batch of 2 failed in onnxruntime ({failures[0]}), a batch of 1 worked: "
                "the model is served one image per call"
            )
        return classes, max_batch, max_batch_source
    raise ImportRefused(
        f"a trial inference on a batch of {batches[-1]} failed in onnxruntime ({failures[-1]})"
    )


def _classes(scores: np.ndarray, batch: int, output: str) -> int:
    shape = list(scores.shape)
    accepted = "[N], [N, K], [N, 1, K] or [N, K, 1, 1]"
    if scores.ndim == 0 or shape[0] != batch:
        raise ImportRefused(
            f"output {output!r} has shape {shape} for a batch of {batch}; expected the batch "
            f"first: {accepted}"
        )
    rest = shape[1:]
    if len([dim for dim in rest if dim != 1]) > 1 or 0 in rest:
        raise ImportRefused(
            f"output {output!r} has shape {shape} for a batch of {batch}; expected one score per "
            f"class per image: {accepted}"
        )
    if not np.issubdtype(scores.dtype, np.floating):
        raise ImportRefused(f"output {output!r} is {scores.dtype}; expected float scores")
    if not np.all(np.isfinite(scores)):
        raise ImportRefused(f"a trial batch gave non-finite scores (nan or inf) in {output!r}")
    return math.prod(rest)


def _activation(graph: onnx.GraphProto, output: str, classes: int) -> tuple[str, str]:
    producers = {name: node for node in graph.node for name in node.output}
    name, seen = output, set()
    while name in producers and name not in seen:
        seen.add(name)
        node = producers[name]
        if node.op_type in ("Softmax", "Sigmoid"):
            return "none", f"graph (ends in {node.op_type})"
        if node.op_type == "LogSoftmax":
            return "softmax", "graph (ends in LogSoftmax)"
        if node.op_type not in SHAPE_ONLY_OPS or not node.input:
            break
        name = node.input[0]
    if classes == 1:
        return "sigmoid", "default (one output unit: a logit)"
    return "softmax", f"default ({classes} output units: logits)"


# --- labels --------------------------------------------------------------------------------------


def _parse_label_text(text: str) -> list[str] | dict[Any, Any]:
    """A JSON list or dict, a Python list or dict literal, or newline/comma-separated names."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{", "("):
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(stripped)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
            if isinstance(value, list | tuple):
                return [str(item) for item in value]
    if "\n" in stripped:
        return _lines(stripped)
    return [part.strip() for part in stripped.split(",")]


def _flag_labels(text: str) -> list[str]:
    if text.startswith("@"):
        file = Path(text[1:])
        try:
            return _lines(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ImportRefused(f"--labels {text}: cannot read it ({first_line(error)})") from None
    labels = [part.strip() for part in text.split(",")]
    if not all(labels):
        raise ImportRefused(f"--labels {text!r} has an empty label")
    return labels


def _label_candidates(
    path: Path, model: onnx.ModelProto, flag: str | None
) -> Iterator[tuple[list[str] | dict[Any, Any], str]]:
    """(labels, source) from each source that has some, highest precedence first (lazily)."""
    if flag is not None:
        yield _flag_labels(flag), "flag --labels"
    labels_txt = _sidecar(path, "labels.txt")
    if labels_txt is not None:
        try:
            yield _lines(labels_txt.read_text(encoding="utf-8")), labels_txt.name
        except (OSError, UnicodeDecodeError) as error:
            raise ImportRefused(
                f"{labels_txt.name}: cannot read it ({first_line(error)})"
            ) from None
    index_to_name = _sidecar(path, "index_to_name.json")
    if index_to_name is not None:
        data = _read_json(index_to_name)
        if not isinstance(data, dict):
            raise ImportRefused(f"{index_to_name.name} is not a JSON object {{index: name}}")
        yield (
            {
                key: value[-1] if isinstance(value, list) and value else value
                for key, value in data.items()
            },
            index_to_name.name,
        )
    config_json = _sidecar(path, "config.json")
    if config_json is not None:
        data = _read_json(config_json)
        if isinstance(data, dict) and isinstance(data.get("id2label"), dict):
            yield data["id2label"], f"{config_json.name} id2label"
    props = {prop.key: prop.value for prop in model.metadata_props}
    for key in LABEL_PROPS:
        if key in props:
            source = f"metadata_props[{key!r}]"
            if key == "character":
                yield _lines(props[key], strip=False), source
            else:
                yield _parse_label_text(props[key]), source


def _fit_labels(raw: list[str] | dict[Any, Any], source: str, classes: int) -> tuple[str, ...]:
    expected = 2 if classes == 1 else classes
    unit = "output unit" if classes == 1 else "outputs"
    binary = " (a binary model: 2 labels, negative then positive)" if classes == 1 else ""
    if len(raw) != expected:
        raise ImportRefused(
            f"{len(raw)} labels from {source}, but the model has {classes} {unit}{binary}"
        )
    labels = tuple(raw) if isinstance(raw, list) else _labels_by_index(raw, source, expected)
    for index, label in enumerate(labels):
        if not label:
            raise ImportRefused(f"labels from {source}: label {index} is empty")
    return labels


def _labels_by_index(raw: dict[Any, Any], source: str, expected: int) -> tuple[str, ...]:
    by_index: dict[int, Any] = {}
    for key, value in raw.items():
        try:
            by_index[int(key)] = value
        except (TypeError, ValueError):
            raise ImportRefused(f"labels from {source}: key {key!r} is not a class index") from None
    if set(by_index) != set(range(expected)):
        raise ImportRefused(
            f"labels from {source} cover indices {describe(sorted(by_index))}, but the model's "
            f"classes are 0..{expected - 1}"
        )
    return tuple(str(by_index[index]) for index in range(expected))


def _resolve_labels(
    path: Path, model: onnx.ModelProto, flag: str | None, classes: int, notes: list[str]
) -> tuple[tuple[str, ...], str]:
    for raw, source in _label_candidates(path, model, flag):
        return _fit_labels(raw, source, classes), source
    count = 2 if classes == 1 else classes
    notes.append(
        f"no labels found (--labels, labels.txt, index_to_name.json, config.json id2label or "
        f"metadata_props labels/classes/names/character), so the classes are named by index "
        f"0..{count - 1}; name them with --labels or a labels.txt beside the model"
    )
    return tuple(str(index) for index in range(count)), "default (class indices)"


# --- preprocessing -------------------------------------------------------------------------------


def _preset_layer(fields: _Fields, overrides: Overrides, source: _Input) -> tuple[str, str]:
    """The preset's values, the lowest layer; returns the preset and its source."""
    if overrides.preset is not None:
        if overrides.preset not in PRESETS:
            raise ImportRefused(f"--preset {overrides.preset} is not one of {', '.join(PRESETS)}")
        preset, label = overrides.preset, "flag --preset"
    elif source.channels == 1 and source.height == source.width <= DIGIT_MAX_SIDE:
        preset, label = "digit", f"preset digit (one channel, {source.height}x{source.width})"
    elif source.channels == 3:
        preset, label = "imagenet", "preset imagenet (assumed)"
    else:
        preset, label = "imagenet", "preset imagenet, grayscale (assumed)"
    channels = source.channels
    fields.set("preprocess.resampling", "pillow", label)
    if preset == "digit":
        fields.set("preprocess.mode", "digit", label)
        fields.set("preprocess.color", "L", label)
        fields.set("preprocess.resize", None, label)
        fields.set("preprocess.interpolation", "lanczos", label)
        fields.set("preprocess.scale", 1 / 255, label)
        fields.set("preprocess.mean", (0.0,) * channels, label)
        fields.set("preprocess.std", (1.0,) * channels, label)
        return preset, label
    gray = channels == 1
    fields.set("preprocess.mode", "resize-crop", label)
    fields.set("preprocess.color", "L" if gray else "RGB", label)
    fields.set("preprocess.resize", None, label)  # from the crop size, once the mode is final
    fields.set("preprocess.interpolation", "bilinear", label)
    fields.set("preprocess.scale", 1 / 255, label)
    fields.set("preprocess.mean", (0.0,) if gray else IMAGENET_MEAN, label)
    fields.set("preprocess.std", (1.0,) if gray else IMAGENET_STD, label)
    return preset, label


def _graph_layer(fields: _Fields, source: _Input, preset: str, notes: list[str]) -> None:
    if source.channels == 1:
        fields.set("preprocess.color", "L", "graph (one channel)")
    if source.dtype == "uint8":
        if preset == "imagenet":
            notes.append(
                "the input is uint8, so the ImageNet /255 and mean/std do not apply: pixels reach "
                "the graph as 0..255 (it must normalise them itself)"
            )
        label = "graph (uint8 input: pixels as they are)"
        fields.set("preprocess.scale", 1.0, label)
        fields.set("preprocess.mean", (0.0,) * source.channels, label)
        fields.set("preprocess.std", (1.0,) * source.channels, label)


def _set_normalisation(
    fields: _Fields,
    source: _Input,
    values: dict[str, Any],
    label: str,
    notes: list[str],
) -> None:
    """Scale/mean/std from metadata or a sidecar; skipped, with a note, for a uint8 input."""
    if source.dtype == "uint8":
        identity = (
            values.get("scale", 1.0) == 1.0
            and not any(np.atleast_1d(values.get("mean", 0.0)))
            and all(std == 1.0 for std in np.atleast_1d(values.get("std", 1.0)))
        )
        if not identity:
            notes.append(
                f"{label} rescales or normalises pixels, but the input is uint8: pixels reach the "
                "graph as they are, so that was not applied"
            )
        return
    for key, value in values.items():
        fields.set(f"preprocess.{key}", value, label)


def _provenance_layer(
    fields: _Fields, model: onnx.ModelProto, source: _Input, notes: list[str]
) -> None:
    """Conventions of the framework the graph was converted from, where the file says which."""
    from_paddle = (
        "paddle" in model.producer_name.lower()
        or "paddle" in model.graph.name.lower()
        or any(name.startswith(PADDLE_VALUE_PREFIX) for n in model.graph.node for name in n.output)
    )
    if not from_paddle or fields["preprocess.mode"] == "digit":
        return
    label = "graph (converted from Paddle: OpenCV's conventions)"
    fields.set("preprocess.resampling", "opencv", label)
    changed = "cv2.resize's sampling (no antialiasing)"
    if source.channels == 3:
        fields.set("preprocess.color", "BGR", label)
        changed = "BGR channels and " + changed
    notes.append(
        f"the graph was converted from Paddle (paddle2onnx), whose vision pipelines read images "
        f"with OpenCV, so {changed} were assumed; change them with --color and --resampling"
    )


def _supported(props: dict[str, str], key: str, meanings: dict[str, Any]) -> Any:
    """What the value of ``metadata_props[key]`` means; refused when dlops does not know it."""
    value = props[key]
    if value not in meanings:
        raise ImportRefused(
            f"metadata_props[{key!r}] is {value!r}, which dlops does not support "
            f"(it supports {', '.join(meanings)})"
        )
    return meanings[value]


def _metadata_layer(
    fields: _Fields, model: onnx.ModelProto, source: _Input, notes: list[str]
) -> None:
    props = {prop.key: prop.value for prop in model.metadata_props}
    if PIXEL_FORMAT_KEY in props:
        color = _supported(props, PIXEL_FORMAT_KEY, PIXEL_FORMATS)
        fields.set("preprocess.color", color, f"metadata_props[{PIXEL_FORMAT_KEY!r}]")
    if PIXEL_RANGE_KEY in props:
        scale, mean, std = _supported(props, PIXEL_RANGE_KEY, PIXEL_RANGES)
        _set_normalisation(
            fields,
            source,
            {"scale": scale, "mean": (mean,), "std": (std,)},
            f"metadata_props[{PIXEL_RANGE_KEY!r}]",
            notes,
        )


def _hw(value: Any, what: str, label: str) -> tuple[int, int]:
    """A Hugging Face size: an int, {"height", "width"} or [height, width]."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return int(value["height"]), int(value["width"])
    if isinstance(value, list) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ImportRefused(f"{label}: {what} {value!r} is not a size dlops understands")


def _preprocessor_config_layer(
    fields: _Fields, path: Path, source: _Input, notes: list[str]
) -> None:
    """Hugging Face's preprocessor_config.json (image processors' saved settings)."""
    config_path = _sidecar(path, "preprocessor_config.json")
    if config_path is None:
        return
    label = config_path.name
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ImportRefused(f"{label} is not a JSON object")
    try:
        _apply_preprocessor_config(fields, config, label, source, notes)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
        raise ImportRefused(f"{label}: a value dlops cannot read ({first_line(error)})") from None


def _apply_preprocessor_config(
    fields: _Fields, config: dict[str, Any], label: str, source: _Input, notes: list[str]
) -> None:
    if "resample" in config:
        resample = config["resample"]
        if isinstance(resample, int) and resample in PILLOW_RESAMPLE:
            fields.set("preprocess.interpolation", PILLOW_RESAMPLE[resample], label)
        elif isinstance(resample, str) and resample.lower() in INTERPOLATIONS:
            fields.set("preprocess.interpolation", resample.lower(), label)
        else:
            raise ImportRefused(f"{label}: resample {resample!r} is not a Pillow filter code 0-5")
    _preprocessor_geometry(fields, config, label, source, notes)
    normalisation: dict[str, Any] = {}
    if "do_rescale" in config or "rescale_factor" in config:
        rescale = config.get("do_rescale", True)
        normalisation["scale"] = float(config.get("rescale_factor", 1 / 255)) if rescale else 1.0
    if config.get("do_normalize") is False:
        normalisation["mean"], normalisation["std"] = (0.0,), (1.0,)
    else:
        for key, name in (("image_mean", "mean"), ("image_std", "std")):
            if key in config:
                value = config[key]
                values = value if isinstance(value, list) else [value]
                try:
                    normalisation[name] = tuple(float(item) for item in values)
                except (TypeError, ValueError):
                    raise ImportRefused(f"{label}: {key} {value!r} is not numbers") from None
    if normalisation:
        _set_normalisation(fields, source, normalisation, label, notes)


def _preprocessor_geometry(
    fields: _Fields, config: dict[str, Any], label: str, source: _Input, notes: list[str]
) -> None:
    if "size" not in config:
        return
    if config.get("do_resize", True) is False:
        notes.append(f"{label} has do_resize false; dlops still resizes every image to the input")
        return
    size = config["size"]
    crop_pct = config.get("crop_pct")
    do_crop = bool(config.get("do_center_crop", "crop_size" in config))
    expected = (source.height, source.width)

    def must_fit(hw: tuple[int, int], what: str) -> None:
        if hw != expected:
            raise ImportRefused(
                f"{label} {what} {hw[0]}x{hw[1]}, but the model's input is "
                f"{source.height}x{source.width}"
            )

    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size} if (crop_pct or do_crop) else size
    if isinstance(size, dict) and "shortest_edge" in size:
        shortest = int(size["shortest_edge"])
        if crop_pct is not None:  # ConvNeXt: crop below 384, warp at and above it
            if shortest < CONVNEXT_WARP_SIZE:
                must_fit((shortest, shortest), "crops to")
                fields.set("preprocess.mode", "resize-crop", label)
                fields.set("preprocess.resize", int(shortest / float(crop_pct)), label)
            else:
                must_fit((shortest, shortest), "resizes to")
                fields.set("preprocess.mode", "resize", label)
            return
        if not do_crop:
            raise ImportRefused(
                f"{label} resizes the shorter side to {shortest} without cropping, which does not "
                "give the model a fixed size; pass --mode resize or --mode resize-crop"
            )
        must_fit(_hw(config.get("crop_size", shortest), "crop_size", label), "crops to")
        fields.set("preprocess.mode", "resize-crop", label)
        fields.set("preprocess.resize", shortest, label)
        return
    height, width = _hw(size, "size", label)
    if do_crop:
        must_fit(_hw(config.get("crop_size"), "crop_size", label), "crops to")
        fields.set("preprocess.mode", "resize-crop", label)
        fields.set("preprocess.resize", min(height, width), label)
        if height == width:
            notes.append(
                f"{label} stretches images to {height}x{width} before cropping; dlops resizes "
                f"the shorter side to {height} instead, keeping the aspect ratio (the same for "
                "square images)"
            )
        return
    must_fit((height, width), "resizes to")
    fields.set("preprocess.mode", "resize", label)


def _flag_layer(fields: _Fields, overrides: Overrides) -> None:
    for name, allowed in (
        ("mode", MODES),
        ("interpolation", INTERPOLATIONS),
        ("resampling", RESAMPLINGS),
        ("color", COLORS),
    ):
        value = getattr(overrides, name)
        if value is not None:
            if value not in allowed:
                raise ImportRefused(f"--{name} {value} is not one of {', '.join(allowed)}")
            fields.set(f"preprocess.{name}", value, f"flag --{name}")
    for name in ("resize", "scale", "mean", "std"):
        value = getattr(overrides, name)
        if value is not None:
            fields.set(f"preprocess.{name}", value, f"flag --{name}")


def _finish_preprocess(fields: _Fields, overrides: Overrides, source: _Input) -> PreprocessSpec:
    mode = fields["preprocess.mode"]
    if mode == "resize-crop":
        if fields["preprocess.resize"] is None:
            mode_source = fields.sources["preprocess.mode"]
            fields.set(
                "preprocess.resize",
                math.floor(max(source.height, source.width) / CROP_PCT),
                mode_source if "preset" in mode_source else f"default (crop_pct {CROP_PCT})",
            )
    else:
        if overrides.resize is not None:
            raise ImportRefused(f"--resize applies to --mode resize-crop; the mode is {mode}")
        fields.set("preprocess.resize", None, f"unused by mode {mode}")
    for name in ("mean", "std"):
        values = tuple(float(value) for value in fields[f"preprocess.{name}"])
        if len(values) == 1:
            values *= source.channels
        fields.set(f"preprocess.{name}", values, fields.sources[f"preprocess.{name}"])
    return PreprocessSpec(
        mode=mode,
        color=fields["preprocess.color"],
        resize=fields["preprocess.resize"],
        interpolation=fields["preprocess.interpolation"],
        scale=float(fields["preprocess.scale"]),
        mean=fields["preprocess.mean"],
        std=fields["preprocess.std"],
        resampling=fields["preprocess.resampling"],
    )


def _assumed_note(fields: _Fields, pre: PreprocessSpec, source: _Input) -> str | None:
    """Which of the ImageNet defaults were taken only because nothing else said otherwise."""
    assumed = {
        name.split(".")[1]
        for name, where in fields.sources.items()
        if name.startswith("preprocess.") and where.endswith("(assumed)")
    }
    parts: list[str] = []
    if "mode" in assumed and pre.mode == "resize-crop":
        square = source.height == source.width
        crop = f"{source.height}" if square else f"{source.height}x{source.width}"
        parts.append(f"shorter side to {pre.resize}, centre crop {crop}")
    if "interpolation" in assumed:
        parts.append(pre.interpolation)
    if "scale" in assumed:
        parts.append(f"/{round(1 / pre.scale):g}" if pre.scale < 1 else f"scale {pre.scale:g}")
    if {"mean", "std"} & assumed:
        if pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD:
            parts.append("ImageNet mean/std")
        else:
            mean = ", ".join(f"{value:g}" for value in pre.mean)
            std = ", ".join(f"{value:g}" for value in pre.std)
            parts.append(f"mean {mean}, std {std}")
    if "color" in assumed:
        parts.append(pre.color)
    if not parts:
        return None
    everything = {"mode", "interpolation", "scale", "mean", "std", "color"} <= assumed
    color = {"L": "grayscale"}.get(pre.color, pre.color)
    opening = (
        f"nothing said how to preprocess this {source.dtype} {color} input, so the ImageNet "
        "defaults were assumed"
        if everything or (source.dtype == "uint8" and {"mode", "interpolation"} <= assumed)
        else f"the ImageNet defaults were assumed where nothing else said for this {source.dtype} "
        f"{color} input"
    )
    return f"{opening} ({', '.join(parts)}); change them with {PREPROCESS_FLAGS}"


# --- the whole spec ------------------------------------------------------------------------------


def resolve_spec(path: Path, overrides: Overrides | None = None) -> Resolution:
    """The spec dlops would serve ``path`` with; ImportRefused for what it cannot serve."""
    overrides = overrides or Overrides()
    model = load_model(path)
    graph = model.graph
    notes: list[str] = []
    source = _resolve_input(graph, overrides)
    output = _choose_output(graph, overrides.output)
    classes, max_batch, max_batch_source = _trial(path, source, output, notes)
    source.max_batch = max_batch
    sources = dict(source.sources)
    sources["input.max_batch"] = max_batch_source
    sources["postprocess.output"] = "flag --output" if overrides.output else "graph"
    sources["postprocess.classes"] = "trial run"

    if overrides.activation is not None:
        if overrides.activation not in ACTIVATIONS:
            raise ImportRefused(
                f"--activation {overrides.activation} is not one of {', '.join(ACTIVATIONS)}"
            )
        activation, activation_source = overrides.activation, "flag --activation"
    else:
        activation, activation_source = _activation(graph, output, classes)
        if activation_source.startswith("default"):
            what = "a logit (sigmoid applied)" if classes == 1 else "logits (softmax applied)"
            notes.append(
                f"the graph does not end in Softmax or Sigmoid, so its output was taken as {what}; "
                "pass --activation none if it already gives probabilities"
            )
    sources["postprocess.activation"] = activation_source

    labels, labels_source = _resolve_labels(path, model, overrides.labels, classes, notes)
    sources["postprocess.labels"] = labels_source
    threshold: float | None = None
    if classes == 1:
        threshold = DEFAULT_THRESHOLD if overrides.threshold is None else overrides.threshold
        sources["postprocess.threshold"] = (
            "default" if overrides.threshold is None else "flag --threshold"
        )
        top_k, sources["postprocess.top_k"] = 1, "binary model"
    else:
        if overrides.threshold is not None:
            raise ImportRefused(
                f"--threshold is for binary models (one output unit); this model has {classes} "
                "classes"
            )
        sources["postprocess.threshold"] = "multi-class model"
        if overrides.top_k is None:
            top_k, sources["postprocess.top_k"] = min(DEFAULT_TOP_K, classes), "default"
        else:
            top_k, sources["postprocess.top_k"] = min(overrides.top_k, classes), "flag --top-k"
            if overrides.top_k > classes:
                notes.append(f"--top-k {overrides.top_k} was capped at the {classes} classes")

    fields = _Fields()
    preset, preset_source = _preset_layer(fields, overrides, source)
    _graph_layer(fields, source, preset, notes)
    _provenance_layer(fields, model, source, notes)
    _metadata_layer(fields, model, source, notes)
    _preprocessor_config_layer(fields, path, source, notes)
    _flag_layer(fields, overrides)
    pre = _finish_preprocess(fields, overrides, source)
    if preset == "digit":
        if fields.sources["preprocess.mode"] == preset_source and overrides.preset is None:
            notes.append(
                f"the input is one channel of {source.height}x{source.width}, so the digit "
                "preprocessing was assumed (MNIST-style: ink found on any background, fitted and "
                f"centred by mass); change it with {PREPROCESS_FLAGS}"
            )
        if fields.sources["preprocess.scale"] == preset_source:
            notes.append(
                f"the {source.dtype} input's pixel range is not declared, so /255 (pixels 0..1, "
                "no mean/std) was assumed; change it with --scale, --mean, --std"
            )
    assumed = _assumed_note(fields, pre, source)
    if assumed is not None:
        notes.append(assumed)
    sources.update(fields.sources)

    spec = ModelSpec(
        input=source.spec(),
        preprocess=pre,
        postprocess=PostprocessSpec(
            output=output,
            classes=classes,
            activation=activation,
            labels=labels,
            threshold=threshold,
            top_k=top_k,
        ),
        sources=sources,
    )
    try:
        validate(spec)
    except SpecError as error:
        raise ImportRefused(f"cannot be served as resolved: {error}") from None
    return Resolution(spec, tuple(notes), tuple(str(dim) for dim in source.dims))


def describe(value: Any, limit: int = 5) -> str:
    """A spec value as the import prints it (long label lists shortened)."""
    if isinstance(value, tuple | list):
        items = [_number_text(item) if isinstance(item, float) else str(item) for item in value]
        if len(items) > limit:
            return ", ".join(items[:limit]) + f", … ({len(items)} in all)"
        return ", ".join(items)
    if isinstance(value, float):
        return _number_text(value)
    return "-" if value is None else str(value)
