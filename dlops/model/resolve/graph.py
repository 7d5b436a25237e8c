"""What the graph itself says: its one image input, its scores output, a trial run, the activation.

An input whose channels, height or width are symbolic (Hugging Face exports declare
``[batch_size, num_channels, height, width]``) takes them from what the sources beside the model
say (:class:`InputHints`), or from the flags.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
import onnxruntime as ort
from onnx import external_data_helper

from dlops.config import MODEL_FILE_NAME
from dlops.model.resolve.common import ImportRefused, first_line
from dlops.model.spec import LAYOUTS, SPEC_FILE_NAME, InputSpec, ModelSpec

DTYPE_NAMES = {
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
}
# Nodes the walk back from the output passes through when looking for a final activation.
SHAPE_ONLY_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
TRIAL_SEED = 0
# transformers' PretrainedConfig.num_channels default, for a symbolic channel dimension.
DEFAULT_CHANNELS = 3
# The files of a model store entry besides the external data: the model (renamed), BentoML's
# model.yaml and custom objects, the spec, import_model.py's MODEL_CARD.md. An external data file
# stored under one of these names (or in a folder of that name) would overwrite it.
ENTRY_FILES = frozenset(
    name.casefold()
    for name in (
        MODEL_FILE_NAME,
        "model.yaml",
        "custom_objects.pkl",
        SPEC_FILE_NAME,
        "MODEL_CARD.md",
    )
)
MISSING_LISTED = 3  # missing external files named in the refusal; the rest are counted


@dataclass(frozen=True)
class InputHints:
    """What the sources beside the model say of the input, for dimensions the graph leaves open."""

    channels: int | None = None
    channels_source: str = ""
    size: tuple[int, int] | None = None  # (height, width)
    size_source: str = ""


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """The declared dimensions: an int when fixed, else the symbol's name ("?" when unnamed)."""
    found: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            found.append(int(dim.dim_value))
        else:
            found.append(dim.dim_param or "?")
    return found


def shape_text(declared: list[int | str]) -> str:
    return "[" + ", ".join(str(dim) for dim in declared) + "]"


def _fixed(dim: int | str) -> int | None:
    return dim if isinstance(dim, int) else None


def _names_channels(dim: int | str) -> bool:
    return isinstance(dim, str) and "channel" in dim.lower()


def load_model(path: Path) -> tuple[onnx.ModelProto, list[str]]:
    """The graph, after the ONNX checker, and its external data files (external_data_files);
    ImportRefused for a missing or invalid file, and for external data files that are missing or
    outside the model's folder."""
    if not path.is_file():
        raise ImportRefused("no such file (train one with `make train` or give a path)")
    model = _parse(path)
    # Before the checker, whose word on external data ("should be stored in …, but it is not
    # regular file") does not say what to do.
    external = external_data_files(model, path.parent)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # the checker raises several types, protobuf's among them
        raise ImportRefused(f"not a valid ONNX model ({first_line(error)})") from None
    return model, external


def _parse(path: Path) -> onnx.ModelProto:
    """The graph without its external data (the tensors keep only where their data is)."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError among others
        raise ImportRefused(f"not a valid ONNX model ({first_line(error)})") from None


# --- external data -------------------------------------------------------------------------------


def _external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that may keep its data in a file: initializers and node attributes (also in
    subgraphs and functions, as onnx's own loader walks them) and the sparse initializers."""
    yield from external_data_helper._get_all_tensors(model)
    for sparse in model.graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices


def _inside(location: str) -> str | None:
    """``location`` as a relative POSIX path inside the model's folder, or None if it names no
    file there (absolute, a drive, ``..``, a NUL). Read lexically, before any file is looked at:
    the graph is untrusted input."""
    if not location or "\0" in location or PureWindowsPath(location).drive:
        return None
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        return None
    if ".." in location.replace("\\", "/").split("/"):
        return None
    normal = str(PurePosixPath(location))  # drops "./" and doubled slashes
    return None if normal == "." else normal


def external_data_files(model: onnx.ModelProto, folder: Path) -> list[str]:
    """The files the graph keeps tensors' data in, relative to its ``folder``, sorted.

    These are read from ``location`` in the ``external_data`` of every tensor whose
    ``data_location`` is EXTERNAL (Optimum writes ``model.onnx_data`` beside ``model.onnx`` for
    graphs over 2 GB). ImportRefused for a location that is not a file inside ``folder``
    (absolute, or through ``..``), that would overwrite another file of the store entry, whose
    file is missing, or is reached through a symbolic link (onnx's checker and loader refuse
    those). Nothing outside ``folder`` is read.
    """
    files: dict[str, str] = {}  # normalised location -> the first tensor that names it
    for tensor in _external_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        try:
            with warnings.catch_warnings():  # unknown keys are warned of on stderr, and ignored
                warnings.simplefilter("ignore")
                info = external_data_helper.ExternalDataInfo(tensor)
        except ValueError as error:  # a negative offset or length
            raise ImportRefused(f"not a valid ONNX model ({first_line(error)})") from None
        location = str(info.location)
        normal = _inside(location)
        if normal is None:
            raise ImportRefused(
                f"tensor {tensor.name!r} keeps its data in {location!r}, which is not a file "
                f"inside the model's folder; expected a path relative to {folder}, without '..'"
            )
        if PurePosixPath(normal).parts[0].casefold() in ENTRY_FILES:
            raise ImportRefused(
                f"tensor {tensor.name!r} keeps its data in {location!r}, a name the model store "
                f"entry uses for its own files; rename it (and the graph's location), e.g. to "
                f"{MODEL_FILE_NAME}.data"
            )
        files.setdefault(normal, tensor.name)
    for name in sorted(files):
        link = _link(folder, name)
        if link is not None:
            raise ImportRefused(
                f"its external data file {name!r} is reached through the symbolic link {link}, "
                "and onnx reads no external data through links; expected a regular file: copy "
                "it in place of the link"
            )
    missing = [name for name in sorted(files) if not (folder / name).is_file()]
    if len(missing) == 1:
        (name,) = missing
        raise ImportRefused(
            f"its external data file {name!r} is missing (tensor {files[name]!r} keeps its data "
            f"there); expected at {folder / name}, beside the model: copy every file the export "
            "wrote"
        )
    if missing:
        listed = ", ".join(repr(name) for name in missing[:MISSING_LISTED])
        more = len(missing) - MISSING_LISTED
        listed += f" and {more} more" if more > 0 else ""
        raise ImportRefused(
            f"its external data files {listed} are missing; expected in {folder}, beside the "
            "model: copy every file the export wrote"
        )
    return sorted(files)


def _link(folder: Path, name: str) -> Path | None:
    """The first symbolic link on the way from ``folder`` to its file ``name``, if any."""
    path = folder
    for part in PurePosixPath(name).parts:
        path = path / part
        if path.is_symlink():
            return path
    return None


@dataclass
class Input:
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


def resolve_input(
    graph: onnx.GraphProto,
    layout_flag: str | None,
    size_flag: tuple[int, int] | None,
    hints: InputHints,
    notes: list[str],
) -> Input:
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
    declared = dims(value)
    described = f"input {name!r} {shape_text(declared)}"
    if elem_type not in DTYPE_NAMES:
        type_name = onnx.TensorProto.DataType.Name(elem_type).lower()
        raise ImportRefused(
            f"{described} is tensor({type_name}); expected uint8, float32 or float16 pixels"
        )
    dtype = DTYPE_NAMES[elem_type]
    sources = {"input.name": "graph", "input.dtype": "graph"}
    layout = _layout(declared, layout_flag, described)
    sources["input.layout"] = "flag --layout" if layout_flag else "graph"
    sources["input.channels"] = "graph"
    if layout == "NCHW":
        channel_dim, height_dim, width_dim = declared[1], declared[2], declared[3]
    elif layout == "NHWC":
        channel_dim, height_dim, width_dim = declared[3], declared[1], declared[2]
    else:
        channel_dim, height_dim, width_dim = 1, declared[1], declared[2]
    channels = _fixed(channel_dim)
    if channels is None:
        if hints.channels is not None:
            channels, sources["input.channels"] = hints.channels, hints.channels_source
        else:
            channels, sources["input.channels"] = DEFAULT_CHANNELS, "default (symbolic: 3)"
            notes.append(
                f"{described} leaves its channels symbolic and nothing beside it says how many, "
                f"so {DEFAULT_CHANNELS} were assumed (transformers' num_channels default)"
            )
        if channels not in (1, 3):
            raise ImportRefused(f"{described} has {channels} channels; expected 1 or 3")
    height, width, size_source = _size(height_dim, width_dim, size_flag, hints, described)
    sources["input.height"] = sources["input.width"] = size_source
    batch = declared[0]
    if isinstance(batch, int) and batch > 1:
        raise ImportRefused(
            f"{described} has its batch dimension fixed at {batch}; dlops needs a dynamic batch "
            "dimension or a batch of 1"
        )
    max_batch = 1 if batch == 1 else None
    sources["input.max_batch"] = (
        "graph (batch fixed at 1)" if max_batch == 1 else "graph (dynamic batch)"
    )
    return Input(name, dtype, declared, layout, channels, height, width, max_batch, sources)


def _could_be_channels(dim: int | str) -> bool:
    return dim in (1, 3) or _names_channels(dim)


def _layout(declared: list[int | str], flag: str | None, described: str) -> str:
    rank = len(declared)
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
    # A symbolic dimension can be the channels when its name says so (num_channels).
    channels_first = _could_be_channels(declared[1])
    channels_last = _could_be_channels(declared[3])
    if flag == "NHW":
        raise ImportRefused(f"--layout NHW does not fit the rank-4 {described}")
    if flag == "NCHW" and not (channels_first or isinstance(declared[1], str)):
        raise ImportRefused(
            f"--layout NCHW does not fit {described}: dimension 1 is {declared[1]}, and the "
            "channels must be 1 or 3"
        )
    if flag == "NHWC" and not (channels_last or isinstance(declared[3], str)):
        raise ImportRefused(
            f"--layout NHWC does not fit {described}: dimension 3 is {declared[3]}, and the "
            "channels must be 1 or 3"
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
    if isinstance(declared[1], str) or isinstance(declared[3], str):
        raise ImportRefused(
            f"{described} does not say which dimension holds the channels; pass --layout NCHW "
            "or --layout NHWC"
        )
    raise ImportRefused(
        f"{described} is not an image input: neither dimension 1 (NCHW) nor dimension 3 (NHWC) "
        "is 1 or 3 channels"
    )


def _size(
    height_dim: int | str,
    width_dim: int | str,
    flag: tuple[int, int] | None,
    hints: InputHints,
    described: str,
) -> tuple[int, int, str]:
    """(height, width, source): the graph's, else the flag's, else the hints'."""
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
        fixed = fixed_height is not None and fixed_width is not None
        return height, width, "graph" if fixed else "flag --size"
    if fixed_height is not None and fixed_width is not None:
        return fixed_height, fixed_width, "graph"
    if hints.size is not None:
        height, width = hints.size
        if (fixed_height or height) == height and (fixed_width or width) == width:
            return height, width, hints.size_source
        raise ImportRefused(
            f"{hints.size_source} gives the size {height}x{width}, which contradicts {described}"
        )
    raise ImportRefused(
        f"{described} has a dynamic height or width ({height_dim}x{width_dim}); pass --size N "
        "or --size HxW, the size the model was trained at"
    )


# --- output, trial run, activation ---------------------------------------------------------------


def choose_output(graph: onnx.GraphProto, flag: str | None) -> str:
    names = [value.name for value in graph.output]
    listed = ", ".join(repr(name) for name in names)
    if flag is not None:
        if flag not in names:
            raise ImportRefused(f"--output {flag!r} is not an output of the graph; it has {listed}")
        return flag
    if len(names) != 1:
        raise ImportRefused(f"several outputs: {listed}; pass --output NAME to choose the scores")
    return names[0]


def trial(path: Path, source: Input, output: str, notes: list[str]) -> tuple[int, int | None, str]:
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


def trial_stored(path: Path, spec: ModelSpec) -> None:
    """The trial run again, on the copy of the model that is being stored at ``path`` (with its
    external data beside it): ImportRefused unless it opens and answers as the original did."""
    source = spec.input
    again = Input(
        source.name,
        source.dtype,
        [],
        source.layout,
        source.channels,
        source.height,
        source.width,
        source.max_batch,
        {"input.max_batch": ""},
    )
    try:
        classes, max_batch, _ = trial(path, again, spec.postprocess.output, [])
    except ImportRefused as refusal:
        raise ImportRefused(
            f"the copy made for the model store failed its trial: {refusal}"
        ) from None
    if (classes, max_batch) != (spec.postprocess.classes, source.max_batch):
        raise ImportRefused(
            f"the copy made for the model store answers differently from the original ({classes} "
            f"classes, batch limit {max_batch}; expected {spec.postprocess.classes} and "
            f"{source.max_batch})"
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


def final_op(graph: onnx.GraphProto, output: str) -> str | None:
    """The activation the output ends in (Softmax, Sigmoid, LogSoftmax), through shape-only ops."""
    producers = {name: node for node in graph.node for name in node.output}
    name, seen = output, set()
    while name in producers and name not in seen:
        seen.add(name)
        node = producers[name]
        if node.op_type in ("Softmax", "Sigmoid", "LogSoftmax"):
            return node.op_type
        if node.op_type not in SHAPE_ONLY_OPS or not node.input:
            break
        name = node.input[0]
    return None


def activation(graph: onnx.GraphProto, output: str, classes: int) -> tuple[str, str]:
    ending = final_op(graph, output)
    if ending in ("Softmax", "Sigmoid"):
        return "none", f"graph (ends in {ending})"
    if ending == "LogSoftmax":
        return "softmax", "graph (ends in LogSoftmax)"
    if classes == 1:
        return "sigmoid", "default (one output unit: a logit)"
    return "softmax", f"default ({classes} output units: logits)"
