"""dlops/model/resolve/ in-process: every source of the spec, their precedence, and every
refusal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dlops.model.resolve import (
    ImportRefused,
    Overrides,
    Resolution,
    describe,
    parse_number,
    parse_numbers,
    parse_size,
    resolve_spec,
)
from dlops.model.resolve.presets import IMAGENET_MEAN, IMAGENET_STD
from dlops.model.spec import ModelSpec
from dlops.model.steps import Crop, Digit, Resize

ImageShape = Sequence[int | str]


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    metadata: dict[str, str] | None = None,
    domains: Sequence[str] = (),
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path


def classifier(
    path: Path,
    shape: ImageShape = ("N", 3, 8, 8),
    dtype: int = TensorProto.FLOAT,
    classes: int = 3,
    *,
    layout: str | None = None,
    tail: Sequence[str] = (),
    output_shape: Sequence[int] | None = None,
    transpose: bool = False,
    features_shape: Sequence[int] | None = None,
    bias: float = 0.0,
    extra_outputs: bool = False,
    extra_input: bool = False,
    initializer_as_input: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A tiny image classifier: mean over the image per channel, then a linear layer.

    ``tail`` appends ops after the logits ("Softmax", "Sigmoid", "LogSoftmax", "Identity",
    "CastInt"); ``output_shape`` reshapes the scores (e.g. [-1, 1, K]); ``features_shape``
    reshapes the features to a fixed shape (so some batch sizes fail in onnxruntime).
    """
    rank = len(shape)
    layout = layout or ("NHW" if rank == 3 else "NCHW")
    channels = {"NCHW": shape[1], "NHWC": shape[-1], "NHW": 1}[layout]
    assert isinstance(channels, int)
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    rng = np.random.default_rng(1)
    weights = numpy_helper.from_array(
        rng.normal(size=(channels, classes)).astype(np.float32), "weights"
    )
    initializers = [
        weights,
        numpy_helper.from_array(np.full(classes, bias, dtype=np.float32), "bias"),
    ]
    nodes: list[onnx.NodeProto] = []
    current = "image"
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["as_float"], to=TensorProto.FLOAT))
        current = "as_float"
    nodes += [
        helper.make_node("ReduceMean", [current], ["pooled"], axes=axes, keepdims=1),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
    ]
    current = "features"
    if features_shape is not None:
        initializers.append(
            numpy_helper.from_array(np.array(features_shape, dtype=np.int64), "features_shape")
        )
        nodes.append(helper.make_node("Reshape", [current, "features_shape"], ["fixed"]))
        current = "fixed"
    nodes += [
        helper.make_node("MatMul", [current, "weights"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["logits"]),
    ]
    current, rank_out, out_type = "logits", 2, TensorProto.FLOAT
    for index, op in enumerate(tail):
        name = f"tail{index}"
        if op == "CastInt":
            nodes.append(helper.make_node("Cast", [current], [name], to=TensorProto.INT64))
            out_type = TensorProto.INT64
        elif op in ("Softmax", "LogSoftmax"):
            nodes.append(helper.make_node(op, [current], [name], axis=-1))
        else:
            nodes.append(helper.make_node(op, [current], [name]))
        current = name
    if output_shape is not None:
        initializers.append(
            numpy_helper.from_array(np.array(output_shape, dtype=np.int64), "output_shape")
        )
        nodes.append(helper.make_node("Reshape", [current, "output_shape"], ["reshaped"]))
        current, rank_out = "reshaped", len(output_shape)
    if transpose:
        nodes.append(helper.make_node("Transpose", [current], ["transposed"], perm=[1, 0]))
        current = "transposed"
    nodes.append(helper.make_node("Identity", [current], ["scores"]))
    dims = [f"d{axis}" for axis in range(rank_out)]
    outputs = [helper.make_tensor_value_info("scores", out_type, dims)]
    if extra_outputs:
        nodes.append(helper.make_node("Identity", ["features"], ["embedding"]))
        outputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", "C"]))
    inputs = [helper.make_tensor_value_info("image", dtype, list(shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 4]))
    if initializer_as_input:
        inputs.append(
            helper.make_tensor_value_info("weights", TensorProto.FLOAT, [channels, classes])
        )
    return save_model(path, nodes, inputs, outputs, initializers, metadata)


def resolve(path: Path, **flags: object) -> Resolution:
    return resolve_spec(path, Overrides(**flags))  # type: ignore[arg-type]


def spec_of(path: Path, **flags: object) -> ModelSpec:
    return resolve(path, **flags).spec


def refusal(path: Path, **flags: object) -> str:
    with pytest.raises(ImportRefused) as raised:
        resolve(path, **flags)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


# --- command-line values ----------------------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size("224") == (224, 224)
    assert parse_size("384x288") == (384, 288)
    assert parse_size("16X24") == (16, 24)
    for bad in ("", "0", "x", "3x4x5", "-2", "a"):
        with pytest.raises(ValueError, match="N or HxW"):
            parse_size(bad)


def test_parse_numbers() -> None:
    assert parse_number("1/255") == pytest.approx(1 / 255)
    assert parse_number("0.5") == 0.5
    assert parse_numbers("0.485, 0.456,0.406") == (0.485, 0.456, 0.406)
    for bad in ("", "nan", "inf", "1/0", "a"):
        with pytest.raises(ValueError):
            parse_number(bad)


def test_describe() -> None:
    assert describe(1 / 255) == "1/255"
    assert describe(None) == "-"
    assert describe(("a", "b")) == "a, b"
    assert describe(tuple(str(i) for i in range(1000))) == "0, 1, 2, 3, 4, … (1000 in all)"


# --- the file ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in refusal(tmp_path / "nope.onnx")


def test_not_onnx(model: Path) -> None:
    model.write_bytes(b"not a model")
    assert "not a valid ONNX model" in refusal(model)


# --- input ------------------------------------------------------------------------------------


def test_float_rgb_nchw_gets_the_assumed_imagenet_defaults(model: Path) -> None:
    resolution = resolve(classifier(model, ("N", 3, 224, 224)))
    spec = resolution.spec
    assert (spec.input.name, spec.input.dtype, spec.input.layout) == ("image", "float32", "NCHW")
    assert (spec.input.channels, spec.input.height, spec.input.width) == (3, 224, 224)
    assert spec.input.max_batch is None
    pre = spec.preprocess
    assert pre.steps == (Resize("shorter", 256, 256, "bilinear"), Crop(224, 224))
    assert pre.color == "RGB"
    assert pre.scale == pytest.approx(1 / 255)
    assert (pre.mean, pre.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert spec.sources["preprocess.mean"] == "preset imagenet (assumed)"
    assert spec.sources["input.layout"] == "graph"
    assert resolution.input_shape == ("N", "3", "224", "224")
    assert (
        "nothing said how to preprocess this float32 RGB input, so the ImageNet defaults were "
        "assumed (resize shorter side to 256 (bilinear, pillow) → centre crop 224x224; /255; "
        "ImageNet mean/std; RGB); change them with --preset, --mode, --resize, --interpolation, "
        "--resampling, --color, --scale, --mean, --std, or a <model>.preprocess.json; to be sure, "
        "import with --expect answers.json (the probabilities your own pipeline gives)"
    ) in resolution.notes


@pytest.mark.parametrize(("size", "resize"), [(224, 256), (299, 341), (384, 438), (32, 36)])
def test_imagenet_resize_follows_crop_pct(model: Path, size: int, resize: int) -> None:
    spec = spec_of(classifier(model, ("N", 3, size, size)))
    assert spec.preprocess.steps[0] == Resize("shorter", resize, resize, "bilinear")


def test_non_square_imagenet_input_follows_timm_not_the_longer_side(model: Path) -> None:
    """Each side to floor(side / 0.875), then the crop (timm's rule for a non-square input): a
    48x192 input keeps 7/8 of each side, where the shorter side to 219 kept a quarter of it."""
    resolution = resolve(classifier(model, ("N", 3, 48, 192)))
    assert resolution.spec.preprocess.steps == (
        Resize("exact", 54, 219, "bilinear"),
        Crop(48, 192),
    )
    assert any("resize to 54x219 (stretch)" in note for note in resolution.notes)


def test_nhwc_float16(model: Path) -> None:
    spec = spec_of(classifier(model, (1, 32, 32, 3), TensorProto.FLOAT16, layout="NHWC"))
    assert (spec.input.layout, spec.input.dtype, spec.input.channels) == ("NHWC", "float16", 3)
    assert (spec.input.height, spec.input.width, spec.input.max_batch) == (32, 32, 1)
    assert spec.sources["input.max_batch"] == "graph (batch fixed at 1)"


def test_uint8_rgb_takes_pixels_as_they_are(model: Path) -> None:
    resolution = resolve(classifier(model, ("N", 3, 64, 64), TensorProto.UINT8))
    pre = resolution.spec.preprocess
    assert (pre.steps[0].height, pre.color) == (73, "RGB")
    assert (pre.scale, pre.mean, pre.std) == (1.0, (0.0,) * 3, (1.0,) * 3)
    assert resolution.spec.sources["preprocess.scale"].startswith("graph (uint8")
    notes = " | ".join(resolution.notes)
    assert "the ImageNet /255 and mean/std do not apply" in notes
    assert (
        "defaults were assumed (resize shorter side to 73 (bilinear, pillow) → centre crop 64x64"
        in notes
    )


def test_uint8_nhw_digit(model: Path) -> None:
    resolution = resolve(classifier(model, ("batch", 28, 28), TensorProto.UINT8, classes=1))
    spec = resolution.spec
    assert (spec.input.layout, spec.input.channels) == ("NHW", 1)
    pre = spec.preprocess
    assert (pre.steps, pre.color) == ((Digit(28),), "L")
    assert (pre.scale, pre.mean, pre.std) == (1.0, (0.0,), (1.0,))
    assert spec.sources["preprocess.steps"] == "preset digit (one channel, 28x28)"
    assert any("digit preprocessing was assumed" in note for note in resolution.notes)
    assert not any("ImageNet" in note for note in resolution.notes)


def test_float_digit_assumes_zero_to_one(model: Path) -> None:
    resolution = resolve(classifier(model, ("N", 1, 28, 28), classes=10))
    pre = resolution.spec.preprocess
    assert (pre.is_digit, pre.scale, pre.mean, pre.std) == (
        True,
        pytest.approx(1 / 255),
        (0,),
        (1,),
    )
    assert any("pixel range is not declared, so /255" in note for note in resolution.notes)


@pytest.mark.parametrize("shape", [("N", 1, 100, 100), ("N", 1, 32, 48), ("N", 96, 96)])
def test_other_grayscale_inputs_get_grayscale_imagenet(model: Path, shape: ImageShape) -> None:
    resolution = resolve(classifier(model, shape))
    pre = resolution.spec.preprocess
    assert (pre.steps[-1], pre.color, pre.steps[0].interpolation) == (
        Crop(*resolution.spec.input.shape()[-2:]),
        "L",
        "bilinear",
    )
    assert (pre.scale, pre.mean, pre.std) == (pytest.approx(1 / 255), (0.0,), (1.0,))
    assert resolution.spec.sources["preprocess.steps"] == "preset imagenet, grayscale (assumed)"
    assert any("float32 grayscale input" in note for note in resolution.notes)


def test_initializers_listed_as_inputs_are_not_inputs(model: Path) -> None:
    assert spec_of(classifier(model, initializer_as_input=True)).input.name == "image"


def test_several_inputs(model: Path) -> None:
    message = refusal(classifier(model, extra_input=True))
    assert "several inputs: 'image', 'mask'" in message


def identity_model(path: Path, elem: int, shape: ImageShape) -> Path:
    return save_model(
        path,
        [helper.make_node("Identity", ["image"], ["out"])],
        [helper.make_tensor_value_info("image", elem, list(shape))],
        [helper.make_tensor_value_info("out", elem, list(shape))],
    )


@pytest.mark.parametrize("elem", [TensorProto.INT64, TensorProto.DOUBLE, TensorProto.BOOL])
def test_unsupported_dtype(model: Path, elem: int) -> None:
    message = refusal(identity_model(model, elem, ["N", 3, 8, 8]))
    assert "expected uint8, float32 or float16" in message


@pytest.mark.parametrize("shape", [["N", 10], ["N", 3, 8, 8, 2], ["N"]])
def test_other_ranks_are_not_images(model: Path, shape: ImageShape) -> None:
    assert "not an image input" in refusal(identity_model(model, TensorProto.FLOAT, shape))


@pytest.mark.parametrize("shape", [["N", 5, 8, 8], ["N", 8, 8, 4]])
def test_no_channel_dimension(model: Path, shape: ImageShape) -> None:
    message = refusal(identity_model(model, TensorProto.FLOAT, shape))
    assert "not an image input" in message
    assert "1 or 3" in message


def test_symbolic_dimensions_need_the_layout(model: Path) -> None:
    message = refusal(identity_model(model, TensorProto.FLOAT, ["N", "C", "H", "W"]))
    assert "does not say which dimension holds the channels; pass --layout NCHW" in message


def test_ambiguous_layout_needs_the_flag(model: Path) -> None:
    classifier(model, ("N", 3, 8, 3))
    assert "pass --layout NCHW or --layout NHWC" in refusal(model)
    chw = spec_of(model, layout="NCHW")
    assert (chw.input.layout, chw.input.height, chw.input.width) == ("NCHW", 8, 3)
    assert chw.sources["input.layout"] == "flag --layout"
    hwc = spec_of(model, layout="NHWC")
    assert (hwc.input.layout, hwc.input.height, hwc.input.width) == ("NHWC", 3, 8)


def test_layout_flag_must_fit(model: Path) -> None:
    classifier(model, ("N", 3, 8, 8))
    assert "--layout NHWC does not fit" in refusal(model, layout="NHWC")
    assert "--layout NHW does not fit" in refusal(model, layout="NHW")
    classifier(model, ("N", 28, 28))
    assert "--layout NCHW does not fit the rank-3" in refusal(model, layout="NCHW")


def test_dynamic_size_needs_the_flag(model: Path) -> None:
    classifier(model, ("N", 3, "height", "width"))
    assert "dynamic height or width" in refusal(model)
    assert "pass --size" in refusal(model)
    spec = spec_of(model, size=(160, 128))
    assert (spec.input.height, spec.input.width) == (160, 128)
    assert spec.sources["input.height"] == "flag --size"


def test_size_flag_must_match_a_fixed_size(model: Path) -> None:
    classifier(model, ("N", 3, 224, "width"))
    assert "--size 200x200 contradicts" in refusal(model, size=(200, 200))
    assert spec_of(model, size=(224, 200)).input.width == 200
    classifier(model, ("N", 3, 224, 224))
    assert spec_of(model, size=(224, 224)).sources["input.height"] == "graph"


def test_fixed_batch_above_one(model: Path) -> None:
    assert "batch dimension fixed at 4" in refusal(classifier(model, (4, 3, 8, 8)))


def test_batch_of_two_failing_is_served_one_at_a_time(model: Path) -> None:
    resolution = resolve(classifier(model, features_shape=(1, 3)))
    assert resolution.spec.input.max_batch == 1
    assert resolution.spec.sources["input.max_batch"] == "trial run (a batch of 2 failed)"
    assert any("served one image per call" in note for note in resolution.notes)


def test_failing_trial(model: Path) -> None:
    message = refusal(classifier(model, features_shape=(5, 3)))
    assert "trial inference on a batch of 1 failed in onnxruntime" in message
    assert "[ONNXRuntimeError]" in message


def test_onnxruntime_cannot_open(model: Path) -> None:
    save_model(
        model,
        [helper.make_node("Foo", ["image"], ["out"], domain="com.example")],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "K"])],
        domains=["com.example"],
    )
    assert "onnxruntime cannot open it" in refusal(model)


# --- output -----------------------------------------------------------------------------------


def test_several_outputs_need_the_flag(model: Path) -> None:
    classifier(model, extra_outputs=True)
    assert "several outputs: 'scores', 'embedding'; pass --output NAME" in refusal(model)
    spec = spec_of(model, output="scores")
    assert (spec.postprocess.output, spec.sources["postprocess.output"]) == (
        "scores",
        "flag --output",
    )
    assert "--output 'nope' is not an output" in refusal(model, output="nope")


@pytest.mark.parametrize(
    ("classes", "output_shape", "expected"),
    [(1, [-1], 1), (4, None, 4), (4, [-1, 1, 4], 4), (4, [-1, 4, 1, 1], 4), (1, [-1, 1, 1], 1)],
    ids=["[N]", "[N,K]", "[N,1,K]", "[N,K,1,1]", "[N,1,1]"],
)
def test_output_shapes(
    model: Path, classes: int, output_shape: list[int] | None, expected: int
) -> None:
    spec = spec_of(classifier(model, classes=classes, output_shape=output_shape))
    assert spec.postprocess.classes == expected


def test_output_with_two_class_dimensions(model: Path) -> None:
    message = refusal(classifier(model, classes=6, output_shape=[-1, 2, 3]))
    assert "has shape [2, 2, 3] for a batch of 2; expected one score per class" in message


def test_output_without_the_batch_first(model: Path) -> None:
    assert "expected the batch first" in refusal(classifier(model, classes=3, transpose=True))


def test_non_finite_scores(model: Path) -> None:
    assert "non-finite" in refusal(classifier(model, bias=float("inf")))


def test_integer_scores(model: Path) -> None:
    assert "expected float scores" in refusal(classifier(model, tail=["CastInt"]))


# --- activation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "output_shape", "activation", "source"),
    [
        (["Softmax"], None, "none", "graph (ends in Softmax)"),
        (["Sigmoid"], None, "none", "graph (ends in Sigmoid)"),
        (["LogSoftmax"], None, "softmax", "graph (ends in LogSoftmax)"),
        (["Softmax", "Identity"], [-1, 1, 3], "none", "graph (ends in Softmax)"),
        (["Softmax", "Relu"], None, "softmax", "default (3 output units: logits)"),
        ([], None, "softmax", "default (3 output units: logits)"),
    ],
)
def test_activation_from_the_graph(
    model: Path, tail: list[str], output_shape: list[int] | None, activation: str, source: str
) -> None:
    resolution = resolve(classifier(model, tail=tail, output_shape=output_shape))
    post = resolution.spec.postprocess
    assert (post.activation, resolution.spec.sources["postprocess.activation"]) == (
        activation,
        source,
    )
    taken_as_logits = any("taken as logits" in note for note in resolution.notes)
    assert taken_as_logits == source.startswith("default")


def test_one_unit_is_a_logit(model: Path) -> None:
    spec = spec_of(classifier(model, classes=1))
    assert spec.postprocess.activation == "sigmoid"
    assert spec_of(model, activation="none").postprocess.activation == "none"
    spec = spec_of(classifier(model, classes=1, tail=["Sigmoid"]))
    assert spec.postprocess.activation == "none"


def test_activation_flag(model: Path) -> None:
    classifier(model, tail=["Softmax"])
    spec = spec_of(model, activation="softmax")
    assert spec.postprocess.activation == "softmax"
    assert spec.sources["postprocess.activation"] == "flag --activation"
    assert "sigmoid is for binary models" in refusal(model, activation="sigmoid")
    assert "softmax over one output unit" in refusal(
        classifier(model, classes=1), activation="softmax"
    )


# --- labels -----------------------------------------------------------------------------------


def test_no_labels_are_class_indices(model: Path) -> None:
    resolution = resolve(classifier(model, classes=3))
    assert resolution.spec.postprocess.labels == ("0", "1", "2")
    assert resolution.spec.sources["postprocess.labels"] == "default (class indices)"
    assert any("no labels found" in note and "--labels" in note for note in resolution.notes)
    assert spec_of(classifier(model, classes=1)).postprocess.labels == ("0", "1")


def test_labels_flag(model: Path, tmp_path: Path) -> None:
    classifier(model, classes=3)
    spec = spec_of(model, labels="cat, dog ,bird")
    assert spec.postprocess.labels == ("cat", "dog", "bird")
    assert spec.sources["postprocess.labels"] == "flag --labels"
    listed = tmp_path / "names.list"
    listed.write_text("a, b\nc\nd\n\n")
    assert spec_of(model, labels=f"@{listed}").postprocess.labels == ("a, b", "c", "d")
    assert "cannot read it" in refusal(model, labels=f"@{tmp_path / 'missing'}")
    assert "has an empty label" in refusal(model, labels="a,,b")
    assert (
        refusal(model, labels="a,b") == "2 labels from flag --labels, but the model has 3 outputs"
    )


def test_binary_labels(model: Path) -> None:
    classifier(model, classes=1)
    spec = spec_of(model, labels="no 3,3")
    assert spec.postprocess.labels == ("no 3", "3")
    assert spec.postprocess.threshold == 0.5
    assert spec.sources["postprocess.threshold"] == "default"
    assert spec_of(model, threshold=0.8).postprocess.threshold == 0.8
    assert refusal(model, labels="a,b,c") == (
        "3 labels from flag --labels, but the model has 1 output unit (a binary model: 2 labels, "
        "negative then positive)"
    )


def sidecar(model: Path, name: str, content: str | dict | list) -> Path:
    path = model.parent / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("name", "content", "source"),
    [
        ("labels.txt", "tench\ngoldfish\n  white shark \n\n", "labels.txt"),
        ("model.labels.txt", "tench\r\ngoldfish\r\nwhite shark", "model.labels.txt"),
        (
            "index_to_name.json",
            {"2": "white shark", "0": "tench", "1": "goldfish"},
            "index_to_name.json",
        ),
        (
            "index_to_name.json",
            {
                "0": ["n01440764", "tench"],
                "1": ["n01443537", "goldfish"],
                "2": ["x", "white shark"],
            },
            "index_to_name.json",
        ),
        (
            "config.json",
            {"id2label": {"0": "tench", "1": "goldfish", "2": "white shark"}},
            "config.json id2label",
        ),
        (
            "model.config.json",
            {"id2label": {"0": "tench", "1": "goldfish", "2": "white shark"}},
            "model.config.json id2label",
        ),
    ],
)
def test_labels_from_sidecars(
    model: Path, name: str, content: str | dict | list, source: str
) -> None:
    classifier(model, classes=3)
    sidecar(model, name, content)
    spec = spec_of(model)
    assert spec.postprocess.labels == ("tench", "goldfish", "white shark")
    assert spec.sources["postprocess.labels"] == source


def test_config_json_without_id2label_is_no_source(model: Path) -> None:
    classifier(model, classes=3)
    sidecar(model, "config.json", {"model_type": "vit"})
    assert spec_of(model).sources["postprocess.labels"] == "default (class indices)"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("labels", '["tench", "goldfish", "white shark"]'),
        ("labels", '{"0": "tench", "1": "goldfish", "2": "white shark"}'),
        ("labels", "{0: 'tench', 1: 'goldfish', 2: 'white shark'}"),
        ("labels", "['tench', 'goldfish', 'white shark']"),
        ("labels", "tench\ngoldfish\nwhite shark\n"),
        ("labels", "tench, goldfish, white shark"),
        ("classes", "tench,goldfish,white shark"),
        ("classes", '{"2": "white shark", "1": "goldfish", "0": "tench"}'),
        ("names", "{0: 'tench', 1: 'goldfish', 2: 'white shark'}"),
        ("character", "tench\ngoldfish\nwhite shark\n\n"),
    ],
)
def test_labels_from_metadata_props(model: Path, key: str, value: str) -> None:
    spec = spec_of(classifier(model, classes=3, metadata={key: value}))
    assert spec.postprocess.labels == ("tench", "goldfish", "white shark")
    assert spec.sources["postprocess.labels"] == f"metadata_props[{key!r}]"


def test_label_precedence(model: Path, tmp_path: Path) -> None:
    """flag, labels.txt, index_to_name.json, config.json, labels, classes, names, character."""
    metadata = {key: f"{key}1,{key}2" for key in ("labels", "classes", "names", "character")}
    metadata["character"] = "character1\ncharacter2"
    classifier(model, classes=2, metadata=metadata)
    files = [
        sidecar(model, "model.labels.txt", "stem1\nstem2"),
        sidecar(model, "labels.txt", "txt1\ntxt2"),
        sidecar(model, "model.index_to_name.json", {"0": "stemjson1", "1": "stemjson2"}),
        sidecar(model, "index_to_name.json", {"0": "json1", "1": "json2"}),
        sidecar(model, "config.json", {"id2label": {"0": "hf1", "1": "hf2"}}),
    ]
    assert spec_of(model, labels="f1,f2").postprocess.labels == ("f1", "f2")
    expected = ["stem1", "txt1", "stemjson1", "json1", "hf1"]
    for file, first in zip(files, expected, strict=True):
        assert spec_of(model).postprocess.labels[0] == first
        file.unlink()
    for key in ("labels", "classes", "names", "character"):
        classifier(model, classes=2, metadata=metadata)
        assert spec_of(model).postprocess.labels[0] == f"{key}1"
        del metadata[key]


def test_a_higher_source_with_the_wrong_count_is_refused(model: Path) -> None:
    classifier(model, classes=3, metadata={"labels": "a,b,c"})
    sidecar(model, "labels.txt", "a\nb\n")
    assert refusal(model) == "2 labels from labels.txt, but the model has 3 outputs"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"0": "a", "1": "b", "3": "c"}, "cover indices 0, 1, 3, but"),
        ({"0": "a", "x": "b", "2": "c"}, "key 'x' is not a class index"),
        ({"0": "a", "1": "b"}, "2 labels from index_to_name.json, but the model has 3 outputs"),
        ({"0": "a", "1": "", "2": "c"}, "label 1 is empty"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "is not readable JSON"),
    ],
)
def test_bad_index_to_name(model: Path, content: dict | str, fragment: str) -> None:
    classifier(model, classes=3)
    sidecar(model, "index_to_name.json", content)
    assert fragment in refusal(model)


def test_character_keeps_spaces_and_drops_trailing_empty_lines(model: Path) -> None:
    spec = spec_of(classifier(model, classes=3, metadata={"character": "a\n \nc\n\n"}))
    assert spec.postprocess.labels == ("a", " ", "c")


def test_top_k(model: Path) -> None:
    assert spec_of(classifier(model, classes=3)).postprocess.top_k == 3
    classifier(model, classes=8)
    assert spec_of(model).postprocess.top_k == 5
    assert spec_of(model, top_k=2).postprocess.top_k == 2
    resolution = resolve(model, top_k=50)
    assert resolution.spec.postprocess.top_k == 8
    assert any("--top-k 50 was capped" in note for note in resolution.notes)
    assert spec_of(classifier(model, classes=1), top_k=3).postprocess.top_k == 1


def test_threshold_is_for_binary_models(model: Path) -> None:
    classifier(model, classes=3)
    assert spec_of(model).postprocess.threshold is None
    assert "--threshold is for binary and multi-label models" in refusal(model, threshold=0.7)


# --- preprocessing: metadata_props ------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "pixel_format", "color"),
    [
        (("N", 3, 8, 8), "Bgr8", "BGR"),
        (("N", 3, 8, 8), "Rgb8", "RGB"),
        (("N", 1, 8, 8), "Gray8", "L"),
    ],
)
def test_bitmap_pixel_format(model: Path, shape: ImageShape, pixel_format: str, color: str) -> None:
    spec = spec_of(classifier(model, shape, metadata={"Image.BitmapPixelFormat": pixel_format}))
    assert spec.preprocess.color == color
    assert spec.sources["preprocess.color"] == "metadata_props['Image.BitmapPixelFormat']"


def test_unsupported_pixel_format(model: Path) -> None:
    classifier(model, metadata={"Image.BitmapPixelFormat": "Rgba8"})
    assert "'Rgba8', which dlops does not support" in refusal(model)


def test_gray8_on_three_channels_is_refused(model: Path) -> None:
    classifier(model, metadata={"Image.BitmapPixelFormat": "Gray8"})
    assert "says grayscale (L), but the input has 3 channels" in refusal(model)


@pytest.mark.parametrize(
    ("pixel_range", "scale", "mean", "std"),
    [
        ("NominalRange_0_255", 1.0, 0.0, 1.0),
        ("Normalized_0_1", 1 / 255, 0.0, 1.0),
        ("Normalized_1_1", 1 / 255, 0.5, 0.5),
    ],
)
def test_nominal_pixel_range(
    model: Path, pixel_range: str, scale: float, mean: float, std: float
) -> None:
    resolution = resolve(classifier(model, metadata={"Image.NominalPixelRange": pixel_range}))
    pre = resolution.spec.preprocess
    assert (pre.scale, pre.mean, pre.std) == (pytest.approx(scale), (mean,) * 3, (std,) * 3)
    assert resolution.spec.sources["preprocess.std"] == "metadata_props['Image.NominalPixelRange']"
    (note,) = [note for note in resolution.notes if "ImageNet defaults" in note]
    assert note.startswith("the ImageNet defaults were assumed where nothing else said")
    assert "(resize shorter side to 9 (bilinear, pillow) → centre crop 8x8; RGB)" in note


def test_unsupported_pixel_range(model: Path) -> None:
    classifier(model, metadata={"Image.NominalPixelRange": "NominalRange_16_235"})
    assert "'NominalRange_16_235', which dlops does not support" in refusal(model)


def test_pixel_range_is_not_applied_to_uint8(model: Path) -> None:
    classifier(
        model, dtype=TensorProto.UINT8, metadata={"Image.NominalPixelRange": "Normalized_1_1"}
    )
    resolution = resolve(model)
    assert resolution.spec.preprocess.is_identity
    assert any("but the input is uint8" in note for note in resolution.notes)


# --- preprocessing: preprocessor_config.json --------------------------------------------------

CLIP_STYLE = {
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.25, 0.25, 0.25],
}


def test_preprocessor_config_shortest_edge_and_crop(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", CLIP_STYLE)
    resolution = resolve(model)
    pre = resolution.spec.preprocess
    assert pre.steps == (
        Resize("shorter", 256, 256, "bicubic"),
        Crop(224, 224, offset="floor"),  # transformers' center_crop floors the offset
    )
    assert (pre.scale, pre.mean, pre.std) == (pytest.approx(1 / 255), (0.5,) * 3, (0.25,) * 3)
    for name in ("steps", "scale", "mean", "std"):
        assert resolution.spec.sources[f"preprocess.{name}"] == "preprocessor_config.json"
    # transformers' processors feed RGB: nothing is left to assume.
    assert resolution.spec.sources["preprocess.color"] == "preprocessor_config.json"
    assert not any("ImageNet defaults" in note for note in resolution.notes)


def test_stem_preprocessor_config_comes_first(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", {**CLIP_STYLE, "resample": 2})
    sidecar(model, "model.preprocessor_config.json", CLIP_STYLE)
    spec = spec_of(model)
    assert spec.preprocess.steps[0].interpolation == "bicubic"
    assert spec.sources["preprocess.steps"] == "model.preprocessor_config.json"


FLOOR_CROP = Crop(224, 224, offset="floor")


@pytest.mark.parametrize(
    ("config", "steps"),
    [
        (
            {"size": {"height": 224, "width": 224}, "do_center_crop": False},
            (Resize("exact", 224, 224),),
        ),
        ({"size": 224}, (Resize("exact", 224, 224),)),
        (
            {"size": {"shortest_edge": 224}, "crop_pct": 0.875},
            (Resize("shorter", 256, 256), FLOOR_CROP),
        ),
        (
            {"size": {"shortest_edge": 224}, "crop_pct": 0.95},
            (Resize("shorter", 235, 235), FLOOR_CROP),
        ),
        ({"size": 224, "crop_pct": 0.875}, (Resize("shorter", 256, 256), FLOOR_CROP)),
        (
            {"size": {"shortest_edge": 232}, "crop_size": 224},
            (Resize("shorter", 232, 232), FLOOR_CROP),
        ),
    ],
)
def test_preprocessor_config_geometry(model: Path, config: dict, steps: tuple) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", config)
    assert spec_of(model).preprocess.steps == steps


def test_convnext_at_384_warps(model: Path) -> None:
    classifier(model, ("N", 3, 384, 384))
    sidecar(model, "preprocessor_config.json", {"size": {"shortest_edge": 384}, "crop_pct": 0.875})
    assert spec_of(model).preprocess.steps == (Resize("exact", 384, 384),)


def test_stretch_then_crop_is_served_as_written(model: Path) -> None:
    """DeiT's processor stretches to 256x256, then crops 224: now steps, no approximation."""
    classifier(model, ("N", 3, 224, 224))
    sidecar(
        model,
        "preprocessor_config.json",
        {"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": 224},
    )
    assert spec_of(model).preprocess.steps == (Resize("exact", 256, 256), FLOOR_CROP)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (
            {"size": {"height": 256, "width": 256}},
            "the steps end at 256x256, but the model takes 224x224 (steps from "
            "preprocessor_config.json)",
        ),
        (
            {"size": {"shortest_edge": 256}, "crop_size": 192},
            "the steps end at 192x192, but the model takes 224x224",
        ),
        ({"size": {"shortest_edge": 256}}, "without cropping"),
        ({"size": {"longest_edge": 256}}, "not a size dlops understands"),
        ({"resample": 9}, "resample 9 is not a Pillow filter code"),
        ({"image_mean": ["a"]}, "image_mean ['a'] is not numbers"),
        ({"image_std": [0.5, 0.5]}, "mean [0.485, 0.456, 0.406] and std [0.5, 0.5]"),
        ([], "is not a JSON object"),
    ],
)
def test_bad_preprocessor_config(model: Path, config: dict | list, fragment: str) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", config)
    assert fragment in refusal(model)


def test_preprocessor_config_switches(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", {"do_rescale": False, "do_normalize": False})
    pre = spec_of(model).preprocess
    assert (pre.scale, pre.mean, pre.std) == (1.0, (0.0,) * 3, (1.0,) * 3)
    sidecar(model, "preprocessor_config.json", {"do_resize": False, "size": 999})
    resolution = resolve(model)
    assert resolution.spec.preprocess.steps[0] == Resize("shorter", 256, 256)
    assert any("does not resize" in note for note in resolution.notes)


def test_preprocessor_config_overrides_metadata(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), metadata={"Image.NominalPixelRange": "Normalized_1_1"})
    sidecar(model, "preprocessor_config.json", {"image_mean": [0.1, 0.2, 0.3]})
    spec = spec_of(model)
    assert spec.preprocess.mean == (0.1, 0.2, 0.3)
    assert spec.sources["preprocess.mean"] == "preprocessor_config.json"
    assert spec.preprocess.std == (0.5,) * 3
    assert spec.sources["preprocess.std"] == "metadata_props['Image.NominalPixelRange']"


def test_preprocessor_config_normalisation_skips_uint8(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), TensorProto.UINT8)
    sidecar(model, "preprocessor_config.json", CLIP_STYLE)
    resolution = resolve(model)
    assert resolution.spec.preprocess.is_identity
    assert resolution.spec.preprocess.steps[0].interpolation == "bicubic"
    assert any("preprocessor_config.json rescales" in note for note in resolution.notes)


# --- preprocessing: flags and presets ---------------------------------------------------------


def test_flags_override_everything(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), metadata={"Image.BitmapPixelFormat": "Rgb8"})
    sidecar(model, "preprocessor_config.json", CLIP_STYLE)
    flags = {
        "mode": "resize-crop",
        "resize": 300,
        "interpolation": "lanczos",
        "color": "BGR",
        "scale": 0.5,
        "mean": (0.1, 0.2, 0.3),
        "std": (2.0,),
    }
    resolution = resolve(model, **flags)
    pre = resolution.spec.preprocess
    assert pre.steps == (Resize("shorter", 300, 300, "lanczos"), Crop(224, 224))
    assert pre.color == "BGR"
    assert (pre.scale, pre.mean, pre.std) == (0.5, (0.1, 0.2, 0.3), (2.0, 2.0, 2.0))
    for name in ("color", "scale", "mean", "std"):
        assert resolution.spec.sources[f"preprocess.{name}"] == f"flag --{name}"
    assert resolution.spec.sources["preprocess.steps"] == (
        "flag --mode; flag --interpolation; preset imagenet (assumed); flag --resize"
    )
    assert not any("ImageNet" in note for note in resolution.notes)


def test_mode_flag(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224))
    spec = spec_of(model, mode="resize")
    assert spec.preprocess.steps == (Resize("exact", 224, 224),)
    assert "--resize applies to --mode resize-crop" in refusal(model, mode="resize", resize=300)
    assert "at least the crop of 224x224" in refusal(model, resize=200)


def test_resize_crop_on_a_digit_input_gets_a_default_resize(model: Path) -> None:
    spec = spec_of(classifier(model, ("N", 28, 28), TensorProto.UINT8), mode="resize-crop")
    assert spec.preprocess.steps == (Resize("shorter", 32, 32, "lanczos"), Crop(28, 28))
    assert spec.sources["preprocess.steps"].startswith("flag --mode")


def test_explicit_presets(model: Path) -> None:
    classifier(model, ("N", 28, 28), TensorProto.UINT8)
    resolution = resolve(model, preset="imagenet")
    pre = resolution.spec.preprocess
    assert (pre.steps, pre.color) == ((Resize("shorter", 32, 32), Crop(28, 28)), "L")
    assert resolution.spec.sources["preprocess.steps"] == "flag --preset"
    assert not any("assumed" in note for note in resolution.notes)
    classifier(model, ("N", 1, 28, 28))
    resolution = resolve(model, preset="digit")
    assert resolution.spec.preprocess.is_digit
    assert not any("digit preprocessing was assumed" in note for note in resolution.notes)
    classifier(model, ("N", 3, 28, 28))
    assert "color L does not fit" in refusal(model, preset="digit")


def test_digit_mode_needs_a_square_single_channel(model: Path) -> None:
    classifier(model, ("N", 1, 28, 32))
    assert "digit is the whole pipeline of a square input" in refusal(model, mode="digit")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        ({"color": "L"}, "color L does not fit an input of 3 channel(s)"),
        ({"mean": (0.1, 0.2)}, "need 3 value(s) each"),
        ({"std": (0.0,)}, "scale and std must be above 0"),
    ],
)
def test_flags_that_cannot_be_served(model: Path, flags: dict, fragment: str) -> None:
    classifier(model)
    message = refusal(model, **flags)
    assert message.startswith("cannot be served as resolved:")
    assert fragment in message


def test_uint8_refuses_normalisation_flags(model: Path) -> None:
    classifier(model, dtype=TensorProto.UINT8)
    assert "a uint8 input takes pixels as they are" in refusal(model, scale=1 / 255)


def test_every_field_has_a_source(model: Path) -> None:
    spec = spec_of(classifier(model))
    for section in ("input", "preprocess", "postprocess"):
        for name in vars(getattr(spec, section)):
            assert spec.sources.get(f"{section}.{name}"), f"{section}.{name}"


@pytest.mark.parametrize(
    "config",
    [
        {"resample": [2]},
        {"size": {"shortest_edge": "big"}, "crop_size": 224},
        {"size": {"height": "x", "width": 224}},
        {"do_rescale": True, "rescale_factor": "a"},
        {"size": {"shortest_edge": 224}, "crop_pct": 0},
    ],
)
def test_unreadable_preprocessor_config_values(model: Path, config: dict) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocessor_config.json", config)
    message = refusal(model)
    assert message.startswith("preprocessor_config.json")


# -- conventions of the framework a graph was converted from ---------------------------------


def renamed_graph(path: Path, graph_name: str) -> Path:
    model = onnx.load(path)
    model.graph.name = graph_name
    onnx.save(model, path)
    return path


def test_a_graph_converted_from_paddle_gets_opencvs_conventions(model: Path) -> None:
    """paddle2onnx names its graph so; Paddle's vision pipelines read images with OpenCV."""
    path = renamed_graph(classifier(model, ("N", 3, 32, 32)), "PaddlePaddle Graph in PIR mode")
    resolution = resolve(path)
    pre = resolution.spec.preprocess
    assert pre.color == "BGR"
    # cv2's sampling, its int(round()) sizes and floored crop offsets.
    assert pre.steps == (
        Resize("shorter", 36, 36, "bilinear", "opencv"),
        Crop(32, 32, offset="floor"),
    )
    assert "graph (converted from" in resolution.spec.sources["preprocess.steps"]
    assert any("paddle2onnx" in note and "--resampling" in note for note in resolution.notes)
    # Flags still win; other graphs keep Pillow's antialiased resampling and RGB.
    flagged = spec_of(path, resampling="pillow", color="RGB").preprocess
    assert (flagged.color, flagged.steps[0].resampling) == ("RGB", "pillow")
    plain = spec_of(renamed_graph(path, "torch_jit")).preprocess
    assert (plain.color, plain.steps[0].resampling) == ("RGB", "pillow")


def test_a_grayscale_paddle_graph_keeps_its_one_channel(model: Path) -> None:
    path = renamed_graph(classifier(model, ("N", 1, 96, 96)), "PaddlePaddle Graph")
    pre = spec_of(path).preprocess
    assert (pre.color, pre.steps[0].resampling) == ("L", "opencv")


def test_opencv_resampling_refuses_filters_opencv_lacks(model: Path) -> None:
    path = classifier(model, ("N", 3, 32, 32))
    assert "opencv resampling offers" in refusal(path, resampling="opencv", interpolation="box")
