"""Hugging Face exports are served exactly as transformers' own image processors feed them.

Each fixture is what ``optimum-cli export onnx --task image-classification`` leaves in its
directory: ``model.onnx`` with the input ``pixel_values`` ``[batch_size, num_channels, height,
width]`` (optimum-onnx's ViTOnnxConfig and its subclasses for ConvNeXt, DeiT, BEiT, LeViT,
MobileViT...; since optimum-onnx 9ca6f68 "Enable dynamo export" the channels are fixed:
``[batch_size, 3, height, width]``) and the output ``logits`` ``[batch_size, <num_labels>]``
(only axis 0 is dynamic), beside the ``preprocessor_config.json`` and ``config.json`` that
transformers' own ``save_pretrained`` writes. The reference is the processor's PIL backend
(``XImageProcessorPil``), no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import transformers
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

from dlops.model.resolve import ImportRefused, Overrides, resolve_spec
from dlops.model.resolve.huggingface import CLASS_DEFAULTS, MODEL_TYPES
from dlops.model.spec import ModelSpec
from dlops.model.steps import Crop, Resize
from dlops.pipeline.preprocess import Preprocessor
from tests.conftest import run_import
from tests.test_import_model import imported, rows

# float32 rounding only: dlops computes pixel * (scale / std) - mean / std in one multiply-add,
# transformers (pixel * scale in float64, then float32 - mean) / std.
TOLERANCE = 1e-5
LABELS = {0: "tabby cat", 1: "golden retriever", 2: "goldfish", 3: "espresso"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def optimum_export(
    directory: Path, channels: int = 3, channel_dim: int | str = "num_channels"
) -> Path:
    """``model.onnx`` as Optimum names it: pixel_values -> logits, mean-pooled then linear."""
    weights = np.random.default_rng(0).normal(size=(channels, len(LABELS))).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values"], ["pooled"], axes=[2, 3], keepdims=1),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "classifier.weight"], ["logits"]),
    ]
    inputs = [
        helper.make_tensor_value_info(
            "pixel_values", TensorProto.FLOAT, ["batch_size", channel_dim, "height", "width"]
        )
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", len(LABELS)])
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        inputs,
        outputs,
        [numpy_helper.from_array(weights, "classifier.weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save(model, path)
    return path


def exported(
    directory: Path,
    processor: Any,
    config: transformers.PretrainedConfig,
    channel_dim: int | str = "num_channels",
) -> Path:
    processor.save_pretrained(directory)
    config.save_pretrained(directory)
    return optimum_export(directory, channels_of(config), channel_dim)


def channels_of(config: transformers.PretrainedConfig) -> int:
    return getattr(config, "num_channels", 3)  # CLIPConfig keeps it in its vision_config


def model_config(kind: type, **values: Any) -> transformers.PretrainedConfig:
    return kind(id2label=LABELS, label2id={name: i for i, name in LABELS.items()}, **values)


def gradient(width: int, height: int, seed: int) -> Image.Image:
    """Ramps and noise: every resize filter and every offset shows in the values."""
    down, across = np.mgrid[0:height, 0:width]
    ramps = np.stack(
        [
            across * 255 // max(width - 1, 1),
            down * 255 // max(height - 1, 1),
            (across + down) % 256,
        ],
        axis=-1,
    )
    noise = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3))
    return Image.fromarray(((ramps + noise) // 2).astype(np.uint8), "RGB")


def make_pictures() -> dict[str, Image.Image]:
    alpha = np.random.default_rng(9).integers(0, 256, size=(300, 400, 1), dtype=np.uint8)
    return {
        "landscape": gradient(640, 480, 1),
        "portrait": gradient(480, 640, 2),
        "square": gradient(300, 300, 3),
        "tiny": gradient(17, 33, 4),
        "large": gradient(1500, 1000, 5),
        "odd": gradient(333, 251, 6),
        "rgba": Image.fromarray(np.concatenate([np.asarray(gradient(400, 300, 7)), alpha], -1)),
        "grey": gradient(350, 260, 8).convert("L"),
        "palette": gradient(260, 350, 10).convert("P", palette=Image.Palette.ADAPTIVE),
    }


PICTURES = make_pictures()


def greyscale(picture: Image.Image) -> Image.Image:
    """As a person would hand a grey model's processor a picture: transparency on white, then L
    (transformers' convert_to_rgb composites on white too)."""
    if "A" in picture.getbands() or "transparency" in picture.info:
        white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        picture = Image.alpha_composite(white, picture.convert("RGBA"))
    return picture.convert("L")


def largest_difference(spec: ModelSpec, processor: Any) -> float:
    """max |dlops - transformers| over every picture; shapes must agree."""
    preprocessor = Preprocessor(spec)
    largest = 0.0
    for name, picture in PICTURES.items():
        ours = preprocessor(picture)
        if spec.input.channels == 1:
            reference = processor(greyscale(picture), do_convert_rgb=False, return_tensors="np")
        else:
            # ViT, ConvNeXt, DeiT... leave do_convert_rgb None and fail on L, P and RGBA pictures
            # ("mean must have 1 elements"); dlops converts every picture, as CLIP's does.
            reference = processor(picture, do_convert_rgb=True, return_tensors="np")
        # Without rescale and normalisation transformers hands back uint8; the graph takes float.
        theirs = np.asarray(reference["pixel_values"][0]).astype(np.float32)
        assert ours.shape == theirs.shape, name
        assert ours.dtype == np.float32, name
        largest = max(largest, float(np.abs(ours - theirs).max()))
    return largest


P = transformers
# (processor, config) as each family's checkpoints have them.
FAMILIES: dict[str, Callable[[], tuple[Any, transformers.PretrainedConfig]]] = {
    # 224x224 stretch, bilinear, 0.5 mean/std.
    "vit": lambda: (P.ViTImageProcessorPil(), model_config(P.ViTConfig)),
    # shortest_edge 224 < 384: shorter side to int(224 / 0.875) = 256, crop 224.
    "convnext-224": lambda: (
        P.ConvNextImageProcessorPil(
            size={"shortest_edge": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
        ),
        model_config(P.ConvNextConfig),
    ),
    "convnext-224-crop-0.95": lambda: (
        P.ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.95),
        model_config(P.ConvNextConfig),
    ),
    # the class default, 384: warped, not cropped.
    "convnext-384": lambda: (P.ConvNextImageProcessorPil(), model_config(P.ConvNextConfig)),
    # 256x256 stretch, then the 224 centre crop.
    "deit": lambda: (P.DeiTImageProcessorPil(), model_config(P.DeiTConfig)),
    "beit": lambda: (
        P.BeitImageProcessorPil(resample=2),
        model_config(P.BeitConfig, use_mask_token=False),
    ),
    "clip": lambda: (P.CLIPImageProcessorPil(), model_config(P.CLIPConfig)),
    # google/bit-50: shortest edge 448, crop 448, bilinear.
    "bit": lambda: (
        P.BitImageProcessorPil(size={"shortest_edge": 448}, crop_size=448, resample=2),
        model_config(P.BitConfig),
    ),
    # shortest edge to int(256 / 224 * 224), crop 224.
    "levit": lambda: (P.LevitImageProcessorPil(), model_config(P.LevitConfig)),
    # no normalisation, BGR (apple/mobilevit-small: shortest edge 288, crop 256).
    "mobilevit": lambda: (
        P.MobileViTImageProcessorPil(size={"shortest_edge": 288}, crop_size=256, resample=2),
        model_config(P.MobileViTConfig),
    ),
    "poolformer": lambda: (P.PoolFormerImageProcessorPil(), model_config(P.PoolFormerConfig)),
    # google/efficientnet-b0: include_top divides by image_std twice.
    "efficientnet": lambda: (
        P.EfficientNetImageProcessorPil(
            size={"height": 224, "width": 224},
            resample=0,
            image_mean=IMAGENET_MEAN,
            image_std=[0.47853944, 0.4732864, 0.47434163],
        ),
        model_config(P.EfficientNetConfig),
    ),
    "efficientnet-offset": lambda: (
        P.EfficientNetImageProcessorPil(rescale_offset=True, do_normalize=False),
        model_config(P.EfficientNetConfig),
    ),
    "mobilenet-v2": lambda: (P.MobileNetV2ImageProcessorPil(), model_config(P.MobileNetV2Config)),
    # do_rescale and do_normalize false: 0..255 as they are.
    "vit-raw": lambda: (
        P.ViTImageProcessorPil(do_rescale=False, do_normalize=False),
        model_config(P.ViTConfig),
    ),
    # a one-channel ViT (num_channels 1): grey pictures, one mean and std.
    "vit-grey": lambda: (
        P.ViTImageProcessorPil(image_mean=[0.5], image_std=[0.25]),
        model_config(P.ViTConfig, num_channels=1),
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_served_as_transformers_feeds_it(tmp_path: Path, family: str) -> None:
    processor, config = FAMILIES[family]()
    resolution = resolve_spec(exported(tmp_path, processor, config), Overrides())
    spec = resolution.spec
    assert largest_difference(spec, processor) < TOLERANCE
    assert spec.input.channels == channels_of(config)
    assert spec.sources["preprocess.steps"] == "preprocessor_config.json"
    assert not any("assumed" in note for note in resolution.notes), resolution.notes


# Files as older checkpoints on the Hub have them (feature_extractor_type, int sizes), read by the
# processor class AutoImageProcessor would pick.
LEGACY: dict[str, tuple[str, dict[str, Any], type]] = {
    # openai/clip-vit-base-patch32: size 224 is CLIP's shortest edge (default_to_square false).
    "clip": (
        "CLIPImageProcessorPil",
        {
            "crop_size": 224,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 224,
        },
        P.ViTConfig,
    ),
    # microsoft/resnet-50: ConvNeXt's crop_pct from an int size.
    "resnet": (
        "ConvNextImageProcessorPil",
        {
            "crop_pct": 0.875,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "ConvNextFeatureExtractor",
            "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD,
            "resample": 3,
            "size": 224,
        },
        P.ResNetConfig,
    ),
    # apple/mobilevit-small: only what differs from the class; no normalisation, BGR.
    "mobilevit": (
        "MobileViTImageProcessorPil",
        {
            "crop_size": 256,
            "do_center_crop": True,
            "do_flip_channel_order": True,
            "do_resize": True,
            "feature_extractor_type": "MobileViTFeatureExtractor",
            "resample": 2,
            "size": 288,
        },
        P.MobileViTConfig,
    ),
    # No class named: config.json's model_type (levit) picks it, and LeViT's 256/224.
    "levit-by-model-type": (
        "LevitImageProcessorPil",
        {"size": {"shortest_edge": 224}, "crop_size": 224, "do_center_crop": True},
        P.LevitConfig,
    ),
    # A null is None, not the class's value: no crop, no normalisation.
    "deit-nulls": (
        "DeiTImageProcessorPil",
        {
            "image_processor_type": "DeiTImageProcessor",
            "size": {"height": 224, "width": 224},
            "do_center_crop": None,
            "do_normalize": None,
        },
        P.DeiTConfig,
    ),
    # PoolFormer's crop_pct has no 384 warp, and takes a height and width each.
    "poolformer-384": (
        "PoolFormerImageProcessorPil",
        {
            "image_processor_type": "PoolFormerImageProcessor",
            "size": {"shortest_edge": 384},
            "crop_size": 384,
        },
        P.PoolFormerConfig,
    ),
    "poolformer-height-width": (
        "PoolFormerImageProcessorPil",
        {
            "image_processor_type": "PoolFormerImageProcessor",
            "size": {"height": 224, "width": 200},
            "crop_size": {"height": 224, "width": 200},
        },
        P.PoolFormerConfig,
    ),
    # PilBackend pads after normalising, with 0, right and bottom.
    "vit-pad": (
        "ViTImageProcessorPil",
        {
            "image_processor_type": "ViTImageProcessor",
            "size": {"height": 200, "width": 180},
            "do_pad": True,
            "pad_size": {"height": 224, "width": 224},
        },
        P.ViTConfig,
    ),
}


@pytest.mark.parametrize("name", LEGACY)
def test_hub_files_served_as_transformers_reads_them(tmp_path: Path, name: str) -> None:
    class_name, saved, config_class = LEGACY[name]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(saved))
    config = model_config(config_class)
    config.save_pretrained(tmp_path)
    processor = getattr(transformers, class_name).from_pretrained(tmp_path)
    spec = resolve_spec(optimum_export(tmp_path), Overrides()).spec
    assert largest_difference(spec, processor) < TOLERANCE


def test_steps_of_the_families(tmp_path: Path) -> None:
    """What the comparisons above pass through, spelled out."""
    cases = {
        "convnext-224": (Resize("shorter", 256, 256, "bicubic"), Crop(224, 224, offset="floor")),
        "convnext-384": (Resize("exact", 384, 384, "bicubic"),),
        "deit": (Resize("exact", 256, 256, "bicubic"), Crop(224, 224, offset="floor")),
        "levit": (
            Resize("shorter", 256, 256, "bicubic"),
            Crop(224, 224, offset="floor"),
        ),
    }
    for family, steps in cases.items():
        directory = tmp_path / family
        directory.mkdir()
        processor, config = FAMILIES[family]()
        assert resolve_spec(exported(directory, processor, config)).spec.preprocess.steps == steps
    directory = tmp_path / "mobilevit"
    directory.mkdir()
    pre = resolve_spec(exported(directory, *FAMILIES["mobilevit"]())).spec.preprocess
    assert (pre.color, pre.scale, pre.mean, pre.std) == ("BGR", 1 / 255, (0.0,) * 3, (1.0,) * 3)


def test_odd_padding_is_placed_as_transformers_places_it(tmp_path: Path) -> None:
    """MobileViT's class defaults crop 256 from a shortest edge of 224: a 250x240 picture is
    233 wide, and transformers pads it with ceil(23 / 2) = 12 columns on the left (torchvision
    would pad 11): the floored crop of transformers pads as transformers does."""
    processor = P.MobileViTImageProcessorPil()
    resolution = resolve_spec(exported(tmp_path, processor, model_config(P.MobileViTConfig)))
    picture = gradient(250, 240, 11)
    ours = Preprocessor(resolution.spec)(picture)
    theirs = processor(picture, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


# --- the import path --------------------------------------------------------------------------


@pytest.mark.parametrize("channel_dim", ["num_channels", 3])
def test_optimum_input_needs_no_flags(tmp_path: Path, channel_dim: int | str) -> None:
    """Both shapes Optimum has written for ViT-like models import without --layout or --size."""
    path = exported(
        tmp_path, P.ViTImageProcessorPil(), model_config(P.ViTConfig), channel_dim=channel_dim
    )
    resolution = resolve_spec(path, Overrides())
    spec = resolution.spec
    assert resolution.input_shape == ("batch_size", str(channel_dim), "height", "width")
    assert (spec.input.name, spec.input.layout, spec.input.channels) == ("pixel_values", "NCHW", 3)
    assert (spec.input.height, spec.input.width, spec.input.max_batch) == (224, 224, None)
    assert spec.sources["input.height"] == "preprocessor_config.json"
    assert (spec.postprocess.output, spec.postprocess.classes) == ("logits", 4)
    assert spec.postprocess.labels == tuple(LABELS.values())
    assert spec.sources["postprocess.labels"] == "config.json id2label"
    assert spec.postprocess.task == "single"


def test_import_model_cli(tmp_path: Path) -> None:
    """`python import_model.py <dir>/model.onnx --name vit-test`, no flags (it used to be refused
    with "dimension 1 is num_channels")."""
    directory = tmp_path / "vit"
    directory.mkdir()
    path = exported(directory, P.ViTImageProcessorPil(), model_config(P.ViTConfig))
    result = run_import(tmp_path / "home", str(path), "--name", "vit-test")
    assert imported(result).startswith("vit-test:")
    table = rows(result)
    assert table["postprocess.labels"] == (", ".join(LABELS.values()), "config.json id2label")
    assert table["input.height"][0] == "224"
    assert table["preprocess.steps"][1] == "preprocessor_config.json"
    assert table["preprocess.mean"] == ("0.5, 0.5, 0.5", "preprocessor_config.json")


def test_multi_label_problem_type(tmp_path: Path) -> None:
    config = model_config(P.ViTConfig, problem_type="multi_label_classification")
    spec = resolve_spec(exported(tmp_path, P.ViTImageProcessorPil(), config)).spec
    assert spec.postprocess.task == "multi"
    assert spec.postprocess.activation == "sigmoid"


def refusal(directory: Path, saved: dict[str, Any], config: transformers.PretrainedConfig) -> str:
    (directory / "preprocessor_config.json").write_text(json.dumps(saved))
    config.save_pretrained(directory)
    with pytest.raises(ImportRefused) as raised:
        resolve_spec(optimum_export(directory), Overrides())
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("saved", "fragment"),
    [
        (
            {"image_processor_type": "PerceiverImageProcessor"},
            "PerceiverImageProcessor crops a fraction of each picture's shorter side",
        ),
        (
            {
                "image_processor_type": "ConvNextImageProcessor",
                "size": {"height": 224, "width": 224},
            },
            "ConvNextImageProcessor resizes by shortest_edge",
        ),
        (
            {"size": {"shortest_edge": 224, "longest_edge": 448}, "crop_size": 224},
            "size with longest_edge and shortest_edge keeps each picture's aspect",
        ),
        (
            {"size": {"max_height": 224, "max_width": 224}},
            "gives no fixed input size",
        ),
        (
            {"image_processor_type": "CLIPImageProcessor", "do_center_crop": False},
            "resizes the shorter side to 224 without cropping",
        ),
    ],
)
def test_refused(tmp_path: Path, saved: dict[str, Any], fragment: str) -> None:
    message = refusal(tmp_path, saved, model_config(P.ViTConfig))
    assert message.startswith("preprocessor_config.json")
    assert fragment in message


# --- the tables against transformers --------------------------------------------------------

ATTRIBUTES = (
    "resample",
    "image_mean",
    "image_std",
    "size",
    "default_to_square",
    "crop_size",
    "crop_pct",
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "do_pad",
    "pad_size",
    "do_flip_channel_order",
    "rescale_offset",
    "include_top",
)


@pytest.mark.parametrize("name", CLASS_DEFAULTS)
def test_class_defaults_are_transformers(name: str) -> None:
    """Every attribute that decides the pipeline, as the class has it (None: left out)."""
    processor_class = getattr(transformers, f"{name}Pil")
    defaults = CLASS_DEFAULTS[name]
    for attribute in ATTRIBUTES:
        theirs = getattr(processor_class, attribute, None)
        if attribute == "default_to_square" and theirs is True:
            theirs = None  # the base class's, as dlops assumes for an int size
        if attribute == "rescale_factor" and theirs == 1 / 255 and "do_rescale" not in defaults:
            theirs = None
        ours = defaults.get(attribute)
        assert ours == (list(theirs) if isinstance(theirs, tuple) else theirs), attribute


def test_model_types_are_transformers() -> None:
    for model_type, name in MODEL_TYPES.items():
        assert IMAGE_PROCESSOR_MAPPING_NAMES[model_type]["pil"] == f"{name}Pil", model_type
