"""The exporters' own files, imported with nothing but the model's path: timm's config.json,
Ultralytics' metadata_props, PaddleClas's and PaddleOCR's inference.yml. Each fixture is written
as the exporter writes it; each pipeline is checked against the exporter's own transform, written
out here with Pillow (torchvision's PIL semantics) or cv2 as its code runs it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
import yaml
from PIL import Image

from dlops.model.resolve import huggingface, paddle, timm, ultralytics
from dlops.model.spec import ModelSpec
from dlops.model.steps import Crop, Pad, Resize
from dlops.pipeline.preprocess import Preprocessor
from tests.test_preprocess import photo
from tests.test_resolve import classifier, refusal, resolve, sidecar, spec_of

LABELS = ["tench", "goldfish", "white shark"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (width, height): landscape, portrait, tiny, extreme aspects both ways
PICTURE_SIZES = [(640, 480), (480, 640), (33, 17), (1000, 100), (100, 1000)]
PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


def write_yaml(model: Path, name: str, content: dict[str, Any]) -> Path:
    """As dump_infer_config writes it: yaml.dump, block style."""
    path = model.parent / name
    path.write_text(yaml.dump(content, default_flow_style=False, allow_unicode=True))
    return path


def ours(spec: ModelSpec, image: Image.Image) -> np.ndarray:
    return Preprocessor(spec)(image)


def normalised_chw(pixels: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """ToTensor then Normalize, in float32 as torch computes them."""
    values = pixels.astype(np.float32) / np.float32(255)
    values = (values - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return values.transpose(2, 0, 1)


def torchvision_center_crop(pixels: np.ndarray, height: int, width: int, fill: Any) -> np.ndarray:
    """torchvision's F.center_crop (and timm's center_crop_or_pad): pad where smaller, left/top
    (crop - side) // 2, then crop at int(round((side - crop) / 2.0))."""
    image_height, image_width = pixels.shape[:2]
    if width > image_width or height > image_height:
        left = (width - image_width) // 2 if width > image_width else 0
        top = (height - image_height) // 2 if height > image_height else 0
        right = (width - image_width + 1) // 2 if width > image_width else 0
        bottom = (height - image_height + 1) // 2 if height > image_height else 0
        padded = np.empty(
            (image_height + top + bottom, image_width + left + right, 3), dtype=np.uint8
        )
        padded[...] = fill
        padded[top : top + image_height, left : left + image_width] = pixels
        pixels = padded
        image_height, image_width = pixels.shape[:2]
    top = int(round((image_height - height) / 2.0))  # noqa: RUF046 (as torchvision writes it)
    left = int(round((image_width - width) / 2.0))  # noqa: RUF046
    return pixels[top : top + height, left : left + width]


# --- timm: config.json ---------------------------------------------------------------------------


def timm_config(**pretrained: Any) -> dict[str, Any]:
    """save_config_for_hf's config.json for resnet50.a1_in1k, with ``pretrained`` changed."""
    return {
        "architecture": "resnet50",
        "num_classes": 3,
        "num_features": 2048,
        "global_pool": "avg",
        "label_names": LABELS,
        "pretrained_cfg": {
            "tag": "a1_in1k",
            "custom_load": False,
            "input_size": [3, 224, 224],
            "test_input_size": [3, 288, 288],
            "fixed_input_size": False,
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "crop_mode": "center",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_classes": 1000,
            "pool_size": [7, 7],
            "first_conv": "conv1",
            "classifier": "fc",
            "origin_url": "https://github.com/huggingface/pytorch-image-models",
            "paper_ids": "arXiv:2110.00476",
            **pretrained,
        },
    }


def timm_eval_transform(image: Image.Image, pretrained: dict[str, Any]) -> np.ndarray:
    """transforms_imagenet_eval from resolve_data_config(pretrained_cfg), with torchvision's PIL
    Resize (int() of the longer side), timm's ResizeKeepRatio (round()) and CenterCrop(OrPad)."""
    _, height, width = pretrained.get("input_size") or (3, 224, 224)
    interpolation = pretrained.get("interpolation") or "bicubic"
    crop_pct = pretrained.get("crop_pct") or 0.875
    crop_mode = pretrained.get("crop_mode") or "center"
    mean = pretrained.get("mean") or IMAGENET_MEAN
    std = pretrained.get("std") or IMAGENET_STD
    scale_size = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    rgb = image.convert("RGB")

    def keep_ratio(longest: float, filter_name: str) -> Image.Image:
        ratio_h, ratio_w = rgb.height / scale_size[0], rgb.width / scale_size[1]
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        size = [round(x * 1.0 / ratio) for x in (rgb.height, rgb.width)]
        return rgb.resize((size[1], size[0]), PIL_FILTERS[filter_name])

    fill: Any = 0
    if crop_mode == "squash":
        resized = rgb.resize((scale_size[1], scale_size[0]), PIL_FILTERS[interpolation])
    elif crop_mode == "border":
        resized = keep_ratio(1.0, interpolation)
        fill = [round(255 * value) for value in mean]
    elif scale_size[0] == scale_size[1]:
        short, long = min(rgb.size), max(rgb.size)
        new_short, new_long = scale_size[0], int(scale_size[0] * long / short)
        size = (new_short, new_long) if rgb.width <= rgb.height else (new_long, new_short)
        resized = rgb.resize(size, PIL_FILTERS[interpolation])
    else:
        resized = keep_ratio(0.0, "bilinear")  # ResizeKeepRatio(scale_size): its own default
    cropped = torchvision_center_crop(np.asarray(resized), height, width, fill)
    return normalised_chw(cropped, mean, std)


def test_timm_config_as_save_for_hf_writes_it(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    sidecar(model, "config.json", timm_config())
    spec = spec_of(model)
    pre = spec.preprocess
    assert pre.steps == (Resize("shorter", 235, 235, "bicubic"), Crop(224, 224))
    assert (pre.color, pre.scale, pre.mean, pre.std) == (
        "RGB",
        pytest.approx(1 / 255),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    for name in ("steps", "color", "scale", "mean", "std"):
        assert spec.sources[f"preprocess.{name}"] == "config.json"
    assert spec.postprocess.labels == tuple(LABELS)
    assert spec.sources["postprocess.labels"] == "config.json label_names"


@pytest.mark.parametrize(
    ("pretrained", "shape", "steps"),
    [
        (  # resolve_data_config's defaults: bicubic, crop_pct 0.875, centre
            {"interpolation": None, "crop_pct": None, "crop_mode": None},
            ("N", 3, 224, 224),
            (Resize("shorter", 256, 256, "bicubic"), Crop(224, 224)),
        ),
        (  # non-square: ResizeKeepRatio to cover floor(side / crop_pct), its own bilinear
            {"input_size": [3, 256, 320], "crop_pct": 0.875},
            ("N", 3, 256, 320),
            (Resize("cover", 292, 365, "bilinear", rounding="round"), Crop(256, 320)),
        ),
        (
            {"crop_mode": "squash", "crop_pct": 0.9, "interpolation": "bilinear"},
            ("N", 3, 224, 224),
            (Resize("exact", 248, 248, "bilinear"), Crop(224, 224)),
        ),
        (  # ResizeKeepRatio(longest=1.0) then CenterCropOrPad filled with round(255 * mean)
            {"crop_mode": "border", "crop_pct": 1.0, "mean": [0.5, 0.5, 0.5], "std": [0.5] * 3},
            ("N", 3, 224, 224),
            (
                Resize("fit", 224, 224, "bicubic", rounding="round"),
                Crop(224, 224, fill=(128.0, 128.0, 128.0)),
            ),
        ),
    ],
)
def test_timm_crop_modes(
    model: Path, pretrained: dict[str, Any], shape: tuple[Any, ...], steps: tuple[Any, ...]
) -> None:
    classifier(model, shape, classes=3)
    sidecar(model, "config.json", timm_config(**pretrained))
    assert spec_of(model).preprocess.steps == steps


def test_timm_legacy_single_dict_config(model: Path) -> None:
    """Older timm wrote pretrained_cfg's keys at the top level; _parse_model_cfg reads both."""
    classifier(model, ("N", 3, 384, 384), classes=3)
    legacy = {"architecture": "vit_base_patch16_384", "num_classes": 3, "input_size": [3, 384, 384]}
    sidecar(model, "config.json", {**legacy, "crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3})
    pre = spec_of(model).preprocess
    assert pre.steps == (Resize("shorter", 384, 384, "bicubic"), Crop(384, 384))
    assert (pre.mean, pre.std) == ((0.5,) * 3, (0.5,) * 3)


def test_timm_and_transformers_configs_are_told_apart(model: Path) -> None:
    transformers_config = {"model_type": "vit", "architectures": ["ViTForImageClassification"]}
    sidecar(model, "config.json", transformers_config)
    assert timm.read(model) is None
    sidecar(model, "config.json", timm_config())
    assert huggingface.read(model) == []
    assert timm.read(model) is not None


TIMM_CONFIGS = [
    {},
    {"crop_pct": 0.875, "interpolation": "bilinear"},
    {"input_size": [3, 256, 320], "crop_pct": 0.875},
    {"crop_mode": "squash", "crop_pct": 0.9},
    {"crop_mode": "border", "crop_pct": 1.0, "mean": [0.5, 0.4, 0.3], "std": [0.5] * 3},
    {"crop_mode": "border", "crop_pct": 0.8},
]


@pytest.mark.parametrize("pretrained", TIMM_CONFIGS)
@pytest.mark.parametrize("size", PICTURE_SIZES)
def test_timm_matches_its_eval_transform(
    model: Path, pretrained: dict[str, Any], size: tuple[int, int]
) -> None:
    config = timm_config(**pretrained)
    _, height, width = config["pretrained_cfg"]["input_size"]
    classifier(model, ("N", 3, height, width), classes=3)
    sidecar(model, "config.json", config)
    image = photo(*size, seed=11)
    expected = timm_eval_transform(image, config["pretrained_cfg"])
    np.testing.assert_allclose(ours(spec_of(model), image), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("pretrained", "fragment"),
    [
        ({"input_size": [224, 224]}, "input_size [224, 224] is not [channels, height, width]"),
        ({"crop_mode": "letterbox"}, "crop_mode 'letterbox' is not one of center, squash, border"),
        ({"interpolation": "random"}, "interpolation 'random' is not one of"),
        ({"mean": ["a", "b", "c"]}, "mean ['a', 'b', 'c'] is not numbers"),
        ({"crop_pct": "most"}, "a pretrained_cfg value dlops cannot read"),
    ],
)
def test_bad_timm_config(model: Path, pretrained: dict[str, Any], fragment: str) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    sidecar(model, "config.json", timm_config(**pretrained))
    message = refusal(model)
    assert message.startswith("config.json: ") and fragment in message


def test_timm_pretrained_cfg_must_be_an_object(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    sidecar(model, "config.json", {"architecture": "resnet50", "pretrained_cfg": [3, 224, 224]})
    assert "pretrained_cfg is [3, 224, 224], not an object" in refusal(model)


# --- Ultralytics: metadata_props -----------------------------------------------------------------


def ultralytics_metadata(task: str = "classify", imgsz: str = "[224, 224]") -> dict[str, str]:
    """Exporter.metadata as export_onnx stores it: every value through str()."""
    metadata: dict[str, Any] = {
        "description": "Ultralytics YOLO11n-cls model trained on imagenet",
        "author": "Ultralytics",
        "date": "2025-06-01T12:00:00.000000+00:00",
        "version": "8.4.190",
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "stride": 1,
        "task": task,
        "head": "Classify",
        "batch": 1,
        "imgsz": imgsz,
        "names": dict(enumerate(LABELS)),
        "args": {
            "batch": 1,
            "dynamic": False,
            "half": False,
            "opset": None,
            "simplify": True,
            "nms": False,
        },
        "channels": 3,
        "end2end": False,
    }
    return {key: str(value) for key, value in metadata.items()}


def ultralytics_classify_transform(image: Image.Image, height: int, width: int) -> np.ndarray:
    """ClassificationPredictor: cv2's BGR turned RGB, then classify_transforms((h, w)): Resize
    (the shorter side for a square size, else exactly (h, w)), CenterCrop, ToTensor, Normalize
    with DEFAULT_MEAN 0 and DEFAULT_STD 1."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    rgb = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if height == width:
        short, long = min(rgb.size), max(rgb.size)
        new_long = int(height * long / short)
        size = (height, new_long) if rgb.width <= rgb.height else (new_long, height)
    else:
        size = (width, height)
    resized = rgb.resize(size, Image.Resampling.BILINEAR)
    cropped = torchvision_center_crop(np.asarray(resized), height, width, 0)
    return normalised_chw(cropped, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_ultralytics_classify_export(model: Path) -> None:
    classifier(model, (1, 3, 224, 224), classes=3, metadata=ultralytics_metadata())
    spec = spec_of(model)
    pre = spec.preprocess
    assert pre.steps == (Resize("shorter", 224, 224, "bilinear"), Crop(224, 224))
    assert (pre.color, pre.scale, pre.mean, pre.std) == (
        "RGB",
        pytest.approx(1 / 255),
        (0.0,) * 3,
        (1.0,) * 3,
    )
    assert spec.sources["preprocess.steps"] == ultralytics.SOURCE
    assert spec.postprocess.labels == tuple(LABELS)
    assert spec.sources["postprocess.labels"] == "metadata_props['names']"


def test_ultralytics_dynamic_export_takes_its_size_from_imgsz(model: Path) -> None:
    metadata = ultralytics_metadata(imgsz="[192, 256]")
    classifier(model, ("batch", 3, "height", "width"), classes=3, metadata=metadata)
    spec = spec_of(model)
    assert (spec.input.height, spec.input.width) == (192, 256)
    assert spec.sources["input.height"] == ultralytics.SOURCE
    assert spec.preprocess.steps == (Resize("exact", 192, 256, "bilinear"),)


def test_a_detection_models_metadata_is_not_a_classifiers(model: Path) -> None:
    metadata = ultralytics_metadata(task="detect", imgsz="[640, 640]")
    classifier(model, ("N", 3, 224, 224), classes=3, metadata=metadata)
    assert ultralytics.read(onnx.load(model)) is None
    assert spec_of(model).sources["preprocess.steps"] != ultralytics.SOURCE


@pytest.mark.parametrize("imgsz", ["[224, 224]", "[192, 256]"])
@pytest.mark.parametrize("size", PICTURE_SIZES)
def test_ultralytics_matches_its_classify_transforms(
    model: Path, imgsz: str, size: tuple[int, int]
) -> None:
    height, width = yaml.safe_load(imgsz)
    classifier(model, (1, 3, height, width), classes=3, metadata=ultralytics_metadata(imgsz=imgsz))
    image = photo(*size, seed=12)
    expected = ultralytics_classify_transform(image, height, width)
    np.testing.assert_allclose(ours(spec_of(model), image), expected, atol=1e-5)


@pytest.mark.parametrize("imgsz", ["[224, x]", "[0, 224]", "[1, 2, 3]", "True"])
def test_bad_ultralytics_imgsz(model: Path, imgsz: str) -> None:
    classifier(model, (1, 3, 224, 224), classes=3, metadata=ultralytics_metadata(imgsz=imgsz))
    assert f"metadata_props['imgsz'] is {imgsz!r}" in refusal(model)


# --- PaddleClas and PaddleOCR: inference.yml ------------------------------------------------------


def paddleclas_inference(
    transform_ops: list[dict[str, Any]] | None = None, postprocess: dict[str, Any] | None = None
) -> dict[str, Any]:
    """dump_infer_config's output for ResNet50.yaml: DecodeImage dropped, the scale a float,
    channel_num 3, Topk's class_id_map_file turned into label_list."""
    return {
        "Global": {"model_name": "ResNet50"},
        "PreProcess": {
            "transform_ops": transform_ops
            or [
                {"ResizeImage": {"resize_short": 256}},
                {"CropImage": {"size": 224}},
                {
                    "NormalizeImage": {
                        "channel_num": 3,
                        "mean": list(IMAGENET_MEAN),
                        "order": "",
                        "scale": 1.0 / 255.0,
                        "std": list(IMAGENET_STD),
                    }
                },
                {"ToCHWImage": None},
            ]
        },
        "PostProcess": postprocess or {"Topk": {"topk": 5, "label_list": LABELS}},
    }


# PaddleClas's deploy config for the PULC text-line orientation model (PaddleOCR 3's
# PP-LCNet_x0_25_textline_ori): ResizeImage's size is [width, height].
TEXTLINE_ORIENTATION_OPS = [
    {"ResizeImage": {"size": [160, 80]}},
    {
        "NormalizeImage": {
            "scale": 0.00392157,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "order": "",
            "channel_num": 3,
        }
    },
    {"ToCHWImage": None},
]

# PaddleOCR's dump_infer_config of configs/cls/cls_mv3.yml: the Eval transforms as they are.
PADDLEOCR_CLS = {
    "PreProcess": {
        "transform_ops": [
            {"DecodeImage": {"img_mode": "BGR", "channel_first": False}},
            {"ClsLabelEncode": None},
            {"ClsResizeImg": {"image_shape": [3, 48, 192]}},
            {"KeepKeys": {"keep_keys": ["image", "label"]}},
        ]
    },
    "PostProcess": {"name": "ClsPostProcess", "label_list": ["0", "180"]},
}


def paddleclas_predict(image: Image.Image, ops: list[dict[str, Any]]) -> np.ndarray:
    """deploy/python/predict_cls.py: cv2.imread then [:, :, ::-1], then the ops as
    deploy/python/preprocess.py runs them (ResizeImage and CropImage with cv2, NormalizeImage,
    ToCHWImage)."""
    img = np.asarray(image.convert("RGB"))  # cv2.imread(...)[:, :, ::-1]
    for op in ops:
        ((name, params),) = op.items()
        params = params or {}
        if name == "ResizeImage":
            img_h, img_w = img.shape[:2]
            if params.get("resize_short"):
                percent = float(params["resize_short"]) / min(img_w, img_h)
                w, h = int(round(img_w * percent)), int(round(img_h * percent))  # noqa: RUF046
            else:
                size = params["size"]
                w, h = (size, size) if isinstance(size, int) else (size[0], size[1])
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        elif name == "CropImage":
            size = params["size"]
            w, h = (size, size) if isinstance(size, int) else size
            img_h, img_w = img.shape[:2]
            w_start, h_start = (img_w - w) // 2, (img_h - h) // 2
            img = img[h_start : h_start + h, w_start : w_start + w, :]
        elif name == "NormalizeImage":
            scale = np.float32(params["scale"])
            mean = np.array(params["mean"]).reshape((1, 1, 3)).astype("float32")
            std = np.array(params["std"]).reshape((1, 1, 3)).astype("float32")
            img = (img.astype("float32") * scale - mean) / std
        elif name == "ToCHWImage":
            img = img.transpose((2, 0, 1))
    return img


def paddleocr_resize_norm_img(image: Image.Image, image_shape: list[int]) -> np.ndarray:
    """DecodeImage (img_mode BGR) then ClsResizeImg's resize_norm_img, as rec_img_aug.py has it."""
    img = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    img_c, img_h, img_w = image_shape
    h, w = img.shape[0], img.shape[1]
    ratio = w / float(h)
    if math.ceil(img_h * ratio) > img_w:  # noqa: SIM108 (as PaddleOCR writes it)
        resized_w = img_w
    else:
        resized_w = int(math.ceil(img_h * ratio))  # noqa: RUF046
    resized_image = cv2.resize(img, (resized_w, img_h))
    resized_image = resized_image.astype("float32")
    resized_image = resized_image.transpose((2, 0, 1)) / 255
    resized_image -= 0.5
    resized_image /= 0.5
    padding_im = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    padding_im[:, :, 0:resized_w] = resized_image
    return padding_im


def test_paddleclas_inference_yml(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    write_yaml(model, "inference.yml", paddleclas_inference())
    spec = spec_of(model)
    pre = spec.preprocess
    assert pre.steps == (
        Resize("shorter", 256, 256, "bilinear", "opencv", rounding="round"),
        Crop(224, 224, offset="floor"),
    )
    assert (pre.color, pre.scale, pre.mean, pre.std) == (
        "RGB",
        pytest.approx(1 / 255),
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    for name in ("steps", "color", "scale", "mean", "std"):
        assert spec.sources[f"preprocess.{name}"] == "inference.yml"
    assert spec.postprocess.labels == tuple(LABELS)
    assert spec.sources["postprocess.labels"] == "inference.yml PostProcess.Topk.label_list"


def test_inference_yml_overrides_the_paddle2onnx_guess(model: Path) -> None:
    """The graph's provenance says BGR; PaddleClas's own predictor feeds RGB."""
    classifier(model, ("N", 3, 224, 224), classes=3)
    converted = onnx.load(model)
    converted.producer_name = "PaddlePaddle"
    onnx.save(converted, model)
    assert spec_of(model).preprocess.color == "BGR"
    write_yaml(model, "model.inference.yml", paddleclas_inference())
    spec = spec_of(model)
    assert spec.preprocess.color == "RGB"
    assert spec.sources["preprocess.color"] == "model.inference.yml"


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        (
            [
                {"DecodeImage": {"to_rgb": False, "channel_first": False}},
                {"CropImage": {"size": 224}},
            ],
            ("BGR", (Crop(224, 224, offset="floor"),)),
        ),
        (
            [
                {
                    "ResizeImage": {
                        "resize_short": 256,
                        "backend": "pil",
                        "interpolation": "bicubic",
                    }
                },
                {"CropImage": {"size": [224, 224]}},
            ],
            (
                "RGB",
                (
                    Resize("shorter", 256, 256, "bicubic", "pillow", rounding="round"),
                    Crop(224, 224, offset="floor"),
                ),
            ),
        ),
        (
            [{"ResizeImage": {"size": 224, "interpolation": "lanczos"}}],
            ("RGB", (Resize("exact", 224, 224, "lanczos", "opencv"),)),
        ),
    ],
)
def test_paddleclas_ops(
    model: Path, ops: list[dict[str, Any]], expected: tuple[str, tuple[Any, ...]]
) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    write_yaml(model, "inference.yml", paddleclas_inference(ops))
    pre = spec_of(model).preprocess
    assert (pre.color, pre.steps) == expected
    assert (pre.scale, pre.mean, pre.std) == (1.0, (0.0,) * 3, (1.0,) * 3)  # no NormalizeImage


def test_textline_orientation_with_class_id_map_file(model: Path) -> None:
    """PaddleClas's deploy form: Topk names a class_id_map_file ("0 0_degree" per line)."""
    classifier(model, ("N", 3, 80, 160), classes=2)
    label_file = "textline_orientation_label_list.txt"
    (model.parent / label_file).write_text("0 0_degree\n1 180_degree\n")
    postprocess = {"main_indicator": "Topk", "Topk": {"topk": 1, "class_id_map_file": label_file}}
    write_yaml(model, "inference.yml", paddleclas_inference(TEXTLINE_ORIENTATION_OPS, postprocess))
    spec = spec_of(model)
    assert spec.preprocess.steps == (Resize("exact", 80, 160, "bilinear", "opencv"),)
    assert spec.postprocess.labels == ("0_degree", "180_degree")
    assert spec.sources["postprocess.labels"] == (
        f"inference.yml PostProcess.Topk.class_id_map_file ({label_file})"
    )


def test_paddleocr_text_line_classifier(model: Path) -> None:
    classifier(model, ("N", 3, "H", "W"), classes=2)
    write_yaml(model, "inference.yml", PADDLEOCR_CLS)
    spec = spec_of(model)
    pre = spec.preprocess
    assert (spec.input.height, spec.input.width) == (48, 192)
    assert spec.sources["input.height"] == "inference.yml"
    assert pre.steps == (
        Resize("height", 48, 48, "bilinear", "opencv", max_width=192),
        Pad(48, 192, (0.0,), "top-left", after_normalize=True),
    )
    assert (pre.color, pre.scale, pre.mean, pre.std) == (
        "BGR",
        pytest.approx(1 / 255),
        (0.5,) * 3,
        (0.5,) * 3,
    )
    assert spec.postprocess.labels == ("0", "180")
    assert spec.sources["postprocess.labels"] == "inference.yml PostProcess.label_list"


def test_paddleocr_without_label_list_names_classes_by_index(model: Path) -> None:
    """cls_mv3.yml keeps label_list in Global, which dump_infer_config does not write;
    ClsPostProcess then names the classes by index, as dlops does."""
    classifier(model, ("N", 3, "H", "W"), classes=2)
    write_yaml(model, "inference.yml", {**PADDLEOCR_CLS, "PostProcess": {"name": "ClsPostProcess"}})
    spec = spec_of(model)
    assert spec.postprocess.labels == ("0", "1")
    assert spec.sources["postprocess.labels"] == "default (class indices)"


@pytest.mark.parametrize(
    ("ops", "shape"),
    [
        (paddleclas_inference()["PreProcess"]["transform_ops"], (224, 224)),
        (TEXTLINE_ORIENTATION_OPS, (80, 160)),
    ],
)
# 343 - 224 = 119: a crop offset of 59.5, which CropImage floors and round() would not.
@pytest.mark.parametrize("size", [*PICTURE_SIZES, (343, 256), (256, 343)])
def test_paddleclas_matches_its_deploy_preprocess(
    model: Path, ops: list[dict[str, Any]], shape: tuple[int, int], size: tuple[int, int]
) -> None:
    classifier(model, ("N", 3, *shape), classes=3)
    write_yaml(model, "inference.yml", paddleclas_inference(ops))
    image = photo(*size, seed=13)
    np.testing.assert_allclose(
        ours(spec_of(model), image), paddleclas_predict(image, ops), atol=1e-5
    )


@pytest.mark.parametrize("size", [*PICTURE_SIZES, (400, 60), (30, 200)])
def test_paddleocr_matches_its_resize_norm_img(model: Path, size: tuple[int, int]) -> None:
    classifier(model, ("N", 3, "H", "W"), classes=2)
    write_yaml(model, "inference.yml", PADDLEOCR_CLS)
    image = photo(*size, seed=14)
    expected = paddleocr_resize_norm_img(image, [3, 48, 192])
    np.testing.assert_allclose(ours(spec_of(model), image), expected, atol=1e-5)


def test_multi_label_postprocess(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3, tail=["Sigmoid"])
    postprocess = {"MultiLabelThreshOutput": {"threshold": 0.7, "label_list": LABELS}}
    write_yaml(model, "inference.yml", paddleclas_inference(postprocess=postprocess))
    resolution = resolve(model)
    assert resolution.spec.postprocess.task == "multi"
    assert resolution.spec.sources["postprocess.task"] == "inference.yml"
    assert resolution.spec.postprocess.labels == tuple(LABELS)
    assert any("threshold is 0.7" in note for note in resolution.notes)


@pytest.mark.parametrize(
    ("ops", "fragment"),
    [
        (
            [{"RandFlipImage": {"flip_code": 1}}],
            "PreProcess op RandFlipImage is not one dlops runs; it runs DecodeImage, ResizeImage",
        ),
        (
            [{"DetResizeForTest": {"limit_side_len": 736}}],
            "PreProcess op DetResizeForTest is not one dlops runs",
        ),
        (
            [{"ResizeImage": {"resize_short": 256, "interpolation": "area"}}],
            "PreProcess ResizeImage interpolation 'area' (cv2) is not one dlops reproduces",
        ),
        (
            [{"ResizeImage": {"size": 224, "backend": "skimage"}}],
            "backend 'skimage' is not cv2 or pil",
        ),
        (
            [{"ResizeImage": {"resize_short": 256, "keep_ratio": True}}],
            "PreProcess ResizeImage has keep_ratio, which dlops does not know",
        ),
        ([{"ResizeImage": {}}], "has neither a size nor a resize_short above 0"),
        ([{"CropImage": {"size": [224]}}], "CropImage size is [224]"),
        (
            [{"NormalizeImage": {}}, {"ResizeImage": {"size": 224}}],
            "ResizeImage comes after NormalizeImage, which normalised the pixels already",
        ),
        ([{"NormalizeImage": {"channel_num": 4}}], "channel_num 4 adds channels"),
        (
            [{"ResizeImage": {"size": 224}}, {"NormalizeImage": {"scale": "1/two"}}],
            "scale '1/two' is not a number or a fraction",
        ),
        ([{"ToCHWImage": None}], "does not resize or crop"),
        (
            [{"DecodeImage": {"img_mode": "GRAY"}}, {"ResizeImage": {"size": 224}}],
            "DecodeImage img_mode 'GRAY' is not RGB or BGR",
        ),
        (["ResizeImage"], "transform_ops[0] is 'ResizeImage'; expected one op"),
        ([{"ResizeImage": [224]}], "PreProcess ResizeImage takes [224]; expected a mapping"),
    ],
)
def test_inference_yml_refusals(model: Path, ops: list[Any], fragment: str) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    write_yaml(model, "inference.yml", paddleclas_inference(ops))
    message = refusal(model)
    assert message.startswith("inference.yml") and fragment in message


def test_malformed_inference_yml(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    (model.parent / "inference.yml").write_text("PreProcess: [unclosed\n")
    assert refusal(model).startswith("inference.yml is not readable YAML (")
    (model.parent / "inference.yml").write_text("- a list\n")
    assert refusal(model) == "inference.yml is not a YAML mapping"
    write_yaml(model, "inference.yml", {"PreProcess": {"transform_ops": {"ResizeImage": None}}})
    assert "PreProcess.transform_ops is {'ResizeImage': None}; expected a list" in refusal(model)


def test_bad_class_id_map_file(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=2)
    (model.parent / "labels.list").write_text("0 cat\ndog\n")
    postprocess = {"Topk": {"topk": 1, "class_id_map_file": "labels.list"}}
    write_yaml(model, "inference.yml", paddleclas_inference(postprocess=postprocess))
    assert refusal(model) == (
        "labels.list line 2: 'dog' is not a class index (each line is <index> <name>)"
    )


def test_label_precedence_around_inference_yml(model: Path) -> None:
    """config.json's label_names, then inference.yml, then metadata_props names."""
    names = str(dict(enumerate(["m1", "m2", "m3"])))
    classifier(model, ("N", 3, 224, 224), classes=3, metadata={"names": names})
    write_yaml(model, "inference.yml", paddleclas_inference())
    config = sidecar(model, "config.json", {**timm_config(), "label_names": ["c1", "c2", "c3"]})
    assert spec_of(model).sources["postprocess.labels"] == "config.json label_names"
    config.unlink()
    assert spec_of(model).postprocess.labels == tuple(LABELS)
    (model.parent / "inference.yml").unlink()
    assert spec_of(model).postprocess.labels == ("m1", "m2", "m3")


def test_paddle_reader_is_silent_without_its_file(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), classes=3)
    assert paddle.read(model) is None
    assert paddle.labels(model) is None
