"""Hugging Face exports (``optimum-cli export onnx``): ``preprocessor_config.json`` and
``config.json`` beside the graph, read by the rules of transformers' own image processors.

The processor's class is picked as ``AutoImageProcessor`` picks it: ``image_processor_type``, else
an older file's ``feature_extractor_type`` (``XFeatureExtractor`` is ``XImageProcessor``), else
config.json's ``model_type``. A key the file leaves out takes the class's value
(:data:`CLASS_DEFAULTS`), as ``BaseImageProcessor._set_attributes`` does; one it writes as null
stays None (``ImageProcessingMixin.__init__`` sets it first), which turns its step off. The steps
are ``PilBackend._preprocess``'s: ``resize`` (an int ``size`` is square, or the shortest edge where
the class has ``default_to_square`` false), ``center_crop`` (floored offsets, padding with 0 where
smaller), rescale, normalise, ``pad`` (with 0, right and bottom, after normalising); and where a
class's own ``_preprocess`` or ``resize`` differs, its rule: ConvNeXt's ``crop_pct`` resizes the
shorter side to ``shortest_edge / crop_pct`` and crops below 384, and warps at and above it;
PoolFormer's ``crop_pct`` resizes to ``size / crop_pct``; LeViT resizes the shorter side to 256/224
of ``shortest_edge``; MobileViT never normalises and flips the channels to BGR; EfficientNet
subtracts 1 after rescaling with ``rescale_offset`` and divides by ``image_std`` once more with
``include_top``. The channels come from config.json ``num_channels`` (labels from its ``id2label``:
dlops/model/resolve/labels.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlops.model.resolve.common import (
    Finding,
    ImportRefused,
    first_line,
    numbers,
    read_json_object,
    sidecar,
)
from dlops.model.steps import INTERPOLATIONS, Crop, Pad, Resize, Step, final_size

# Pillow's resampling codes, as preprocessor_config.json writes them.
PILLOW_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# ConvNeXt warps instead of cropping at and above this shortest_edge.
CONVNEXT_WARP_SIZE = 384

# transformers' image_utils constants: IMAGENET_STANDARD_*, IMAGENET_DEFAULT_*, OPENAI_CLIP_*.
_STANDARD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
_IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
_CLIP = {
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
_SWITCHES = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}
_SQUARE_224 = {"height": 224, "width": 224}
_SHORTEST_224 = {"size": {"shortest_edge": 224}, "default_to_square": False}
_CLIP_LIKE = {
    **_SWITCHES,
    **_CLIP,
    **_SHORTEST_224,
    "resample": 3,
    "crop_size": _SQUARE_224,
    "do_center_crop": True,
    "do_convert_rgb": True,
}
_MOBILENET = {
    **_SWITCHES,
    **_STANDARD,
    "resample": 2,
    "size": {"shortest_edge": 256},
    "default_to_square": False,
    "crop_size": _SQUARE_224,
    "do_center_crop": True,
}
# What an image processor class does where its saved config is silent: the class attributes of
# transformers 5's image_processing_pil_<model>.py (BaseImageProcessor: default_to_square true,
# rescale_factor 1/255; an attribute a class lacks is None, so the step it switches is skipped).
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {**_SWITCHES, **_STANDARD, "resample": 2, "size": _SQUARE_224},
    "ConvNextImageProcessor": {
        **_SWITCHES,
        **_STANDARD,
        "resample": 3,
        "size": {"shortest_edge": 384},
        "default_to_square": False,
        "crop_pct": 224 / 256,
    },
    "DeiTImageProcessor": {
        **_SWITCHES,
        **_STANDARD,
        "resample": 3,
        "size": {"height": 256, "width": 256},
        "crop_size": _SQUARE_224,
        "do_center_crop": True,
    },
    "BeitImageProcessor": {
        **_SWITCHES,
        **_STANDARD,
        "resample": 3,
        "size": _SQUARE_224,
        "crop_size": _SQUARE_224,
        "do_center_crop": False,
    },
    "CLIPImageProcessor": _CLIP_LIKE,
    "BitImageProcessor": _CLIP_LIKE,
    "LevitImageProcessor": {
        **_SWITCHES,
        **_IMAGENET,
        **_SHORTEST_224,
        "resample": 3,
        "crop_size": _SQUARE_224,
        "do_center_crop": True,
    },
    "MobileViTImageProcessor": {
        **_STANDARD,
        **_SHORTEST_224,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "crop_size": {"height": 256, "width": 256},
        "do_center_crop": True,
        "do_flip_channel_order": True,
    },
    "PoolFormerImageProcessor": {
        **_SWITCHES,
        **_IMAGENET,
        **_SHORTEST_224,
        "resample": 3,
        "crop_size": _SQUARE_224,
        "crop_pct": 0.9,
        "do_center_crop": True,
    },
    "EfficientNetImageProcessor": {
        **_SWITCHES,
        **_STANDARD,
        "resample": 3,
        "size": {"height": 346, "width": 346},
        "crop_size": {"height": 289, "width": 289},
        "do_center_crop": False,
        "rescale_offset": False,
        "include_top": True,
    },
    "MobileNetV1ImageProcessor": _MOBILENET,
    "MobileNetV2ImageProcessor": _MOBILENET,
    "SiglipImageProcessor": {
        **_SWITCHES,
        **_STANDARD,
        "resample": 3,
        "size": _SQUARE_224,
        "default_to_square": False,
        "do_convert_rgb": True,
    },
    "PvtImageProcessor": {**_SWITCHES, **_IMAGENET, "resample": 3, "size": _SQUARE_224},
    "SegformerImageProcessor": {
        **_SWITCHES,
        **_IMAGENET,
        "resample": 2,
        "size": {"height": 512, "width": 512},
    },
}
# config.json's model_type to its processor class, where preprocessor_config.json names none
# (transformers' IMAGE_PROCESSOR_MAPPING_NAMES, for the classes above).
MODEL_TYPES = {
    **dict.fromkeys(("vit", "vit_msn", "swin", "swinv2"), "ViTImageProcessor"),
    **dict.fromkeys(
        ("convnext", "convnextv2", "cvt", "regnet", "resnet"), "ConvNextImageProcessor"
    ),
    "deit": "DeiTImageProcessor",
    **dict.fromkeys(("beit", "data2vec-vision"), "BeitImageProcessor"),
    "clip": "CLIPImageProcessor",
    **dict.fromkeys(("bit", "dinov2", "hiera"), "BitImageProcessor"),
    "levit": "LevitImageProcessor",
    **dict.fromkeys(("mobilevit", "mobilevitv2"), "MobileViTImageProcessor"),
    "poolformer": "PoolFormerImageProcessor",
    "efficientnet": "EfficientNetImageProcessor",
    "mobilenet_v1": "MobileNetV1ImageProcessor",
    "mobilenet_v2": "MobileNetV2ImageProcessor",
    "siglip": "SiglipImageProcessor",
    **dict.fromkeys(("pvt", "pvt_v2"), "PvtImageProcessor"),
    "segformer": "SegformerImageProcessor",
    "perceiver": "PerceiverImageProcessor",
}
# Classes whose own _preprocess leaves out a step of PilBackend's.
WITHOUT_CROP = frozenset({"SegformerImageProcessor"})
WITHOUT_NORMALIZE = frozenset({"MobileViTImageProcessor"})
WITHOUT_PAD = frozenset(
    {
        "ConvNextImageProcessor",
        "BeitImageProcessor",
        "MobileViTImageProcessor",
        "EfficientNetImageProcessor",
        "MobileNetV2ImageProcessor",
        "SegformerImageProcessor",
    }
)
# Classes whose pipeline dlops' steps cannot express, and why.
UNSUPPORTED = {
    "PerceiverImageProcessor": (
        "crops a fraction of each picture's shorter side before it resizes, which dlops' steps "
        "cannot express"
    ),
    "ImageGPTImageProcessor": "turns pictures into colour cluster ids, not pixel values",
}


def read(path: Path) -> list[Finding]:
    """What preprocessor_config.json says, then what config.json says (each its own source)."""
    model_config, model_type = _model_config(path)
    config_path = sidecar(path, "preprocessor_config.json")
    found_config = [model_config] if model_config is not None else []
    if config_path is None:
        return found_config
    label = config_path.name
    saved = read_json_object(config_path)
    kind = _class_name(saved, model_type)
    if kind in UNSUPPORTED:
        raise ImportRefused(
            f"{label}: {kind} {UNSUPPORTED[kind]}; write the steps in a <model>.preprocess.json"
        )
    # A key written as null stays None (ImageProcessingMixin.__init__ sets it before
    # _set_attributes looks for the class's value): a step it switches is off.
    config = {**CLASS_DEFAULTS.get(kind, {}), **saved}
    try:
        finding = _finding(config, kind, label)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
        raise ImportRefused(f"{label}: a value dlops cannot read ({first_line(error)})") from None
    # transformers feeds a PIL picture's channels in its own order: RGB (or L for one channel,
    # which config.json's num_channels says).
    if finding.color is None:
        finding.color = "RGB"
    return [finding, *found_config]


def _class_name(config: dict[str, Any], model_type: str | None) -> str:
    """The processor's class without its backend's suffix (``Fast``, ``Pil``); "" if unknown."""
    name = config.get("image_processor_type")
    if not name and config.get("feature_extractor_type"):
        name = str(config["feature_extractor_type"]).replace("FeatureExtractor", "ImageProcessor")
    if not name and model_type is not None:
        name = MODEL_TYPES.get(model_type)
    return str(name or "").removesuffix("Fast").removesuffix("Pil")


def _model_config(path: Path) -> tuple[Finding | None, str | None]:
    """config.json's ``num_channels`` and ``problem_type``, and its ``model_type`` (a transformers
    model config has one; timm's has ``architecture`` instead)."""
    config_path = sidecar(path, "config.json")
    if config_path is None:
        return None, None
    config = read_json_object(config_path)
    if "model_type" not in config:
        return None, None
    channels = config.get("num_channels", 3)
    if channels not in (1, 3):
        raise ImportRefused(f"{config_path.name}: num_channels {channels!r}; expected 1 or 3")
    task = "multi" if config.get("problem_type") == "multi_label_classification" else None
    finding = Finding(
        source=config_path.name,
        channels=int(channels),
        task=task,
        color="L" if channels == 1 else None,
    )
    return finding, str(config["model_type"])


def _switch(config: dict[str, Any], name: str, known: bool) -> bool:
    """A ``do_*`` switch: None (a null, or a known class without the attribute) is off; an unknown
    class's missing switch is taken as on, as the classes dlops knows have it."""
    return bool(config.get(name, not known))


def _finding(config: dict[str, Any], kind: str, label: str) -> Finding:
    finding = Finding(source=label)
    known = kind in CLASS_DEFAULTS
    if "resample" in config:
        finding.interpolation = _interpolation(config["resample"], label)
    finding.steps = _steps(config, kind, label, finding.interpolation or "bilinear", finding.notes)
    if finding.steps is not None:
        finding.size = final_size(finding.steps, 640, 480)[::-1]
    rescales = _switch(config, "do_rescale", known)
    finding.scale = float(config.get("rescale_factor", 1 / 255)) if rescales else 1.0
    if not _switch(config, "do_normalize", known) or kind in WITHOUT_NORMALIZE:
        finding.mean, finding.std = (0.0,), (1.0,)
    else:
        if "image_mean" in config:
            finding.mean = numbers(config["image_mean"], "image_mean", label)
        if "image_std" in config:
            finding.std = numbers(config["image_std"], "image_std", label)
    if kind == "EfficientNetImageProcessor":
        _efficientnet(config, label, rescales, finding)
    if config.get("do_flip_channel_order") and kind == "MobileViTImageProcessor":
        finding.color = "BGR"
    if config.get("do_convert_rgb") is False:
        finding.notes.append(
            f"{label} has do_convert_rgb false; dlops converts every picture to the input's "
            "colour all the same"
        )
    return finding


def _efficientnet(config: dict[str, Any], label: str, rescales: bool, finding: Finding) -> None:
    """``rescale_offset``: ``pixel * scale - 1``, so 1 more on the mean; ``include_top``: divided by
    ``image_std`` once more (normalising or not), so the std multiplied by it."""
    mean, std = finding.mean or (0.0,), finding.std or (1.0,)
    if rescales and config.get("rescale_offset"):
        mean = _each(mean, (1.0,), float.__add__)
    if config.get("include_top"):
        std = _each(std, numbers(config["image_std"], "image_std", label), float.__mul__)
    finding.mean, finding.std = mean, std


def _each(
    left: tuple[float, ...], right: tuple[float, ...], op: Callable[[float, float], float]
) -> tuple[float, ...]:
    """``op`` channel by channel, one value standing for every channel."""
    if len(left) != len(right) and 1 not in (len(left), len(right)):
        raise ValueError(f"{len(left)} values against {len(right)}")
    count = max(len(left), len(right))
    return tuple(op(left[index % len(left)], right[index % len(right)]) for index in range(count))


def _interpolation(resample: Any, label: str) -> str:
    if isinstance(resample, int) and resample in PILLOW_RESAMPLE:
        return PILLOW_RESAMPLE[resample]
    if isinstance(resample, str) and resample.lower() in INTERPOLATIONS:
        return resample.lower()
    raise ImportRefused(f"{label}: resample {resample!r} is not a Pillow filter code 0-5")


def _hw(value: Any, what: str, label: str) -> tuple[int, int]:
    """A size as transformers writes it: an int, {"height", "width"} or [height, width]."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        return int(value["height"]), int(value["width"])
    if isinstance(value, list) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ImportRefused(f"{label}: {what} {value!r} is not a size dlops understands")


def _size(config: dict[str, Any], kind: str, label: str) -> dict[str, int]:
    """``size`` as get_size_dict reads it: an int is square where the class has
    ``default_to_square`` (the base class's default), else the shortest edge; an unknown class's
    int is the shortest edge where it has a crop_pct (ConvNeXt's file before image_processor_type
    was written)."""
    size = config["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        if kind in CLASS_DEFAULTS:
            square = bool(config.get("default_to_square", True))
        else:
            square = "crop_pct" not in config
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    if isinstance(size, dict):
        size = {key: value for key, value in size.items() if value is not None}
        if set(size) in ({"shortest_edge", "longest_edge"}, {"max_height", "max_width"}):
            raise ImportRefused(
                f"{label}: size with {' and '.join(sorted(size))} keeps each picture's aspect "
                "within a bound, which gives no fixed input size; dlops serves classifiers of a "
                "fixed size"
            )
        if set(size) == {"shortest_edge"}:
            return {"shortest_edge": int(size["shortest_edge"])}
    height, width = _hw(size, "size", label)
    return {"height": height, "width": width}


def _steps(
    config: dict[str, Any], kind: str, label: str, interpolation: str, notes: list[str]
) -> tuple[Step, ...] | None:
    known = kind in CLASS_DEFAULTS
    if known:
        do_crop = bool(config.get("do_center_crop")) and kind not in WITHOUT_CROP
    else:  # a saved processor writes do_center_crop; without it a crop_size means one
        do_crop = bool(config.get("do_center_crop", "crop_size" in config))
    crop = None
    if do_crop:
        crop = Crop(*_hw(config.get("crop_size"), "crop_size", label), offset="floor")
    if config.get("size") is None or not _switch(config, "do_resize", known):
        if crop is None:
            notes.append(
                f"{label} does not resize; the model's size comes from the graph or --size, and "
                "dlops stretches every picture to it"
            )
            return None
        steps: tuple[Step, ...] = (crop,)
    else:
        size = _size(config, kind, label)
        steps = _resize(config, kind, size, label, interpolation)
        if crop is not None:
            steps = (*steps, crop)
        last = steps[-1]
        if isinstance(last, Resize) and last.to == "shorter":
            raise ImportRefused(
                f"{label} resizes the shorter side to {last.height} without cropping, which does "
                "not give the model a fixed size; write the steps in a <model>.preprocess.json"
            )
    # Without a pad_size, pad pads to the batch's largest picture: all are one size here.
    if config.get("do_pad") and config.get("pad_size") is not None and kind not in WITHOUT_PAD:
        height, width = _hw(config["pad_size"], "pad_size", label)
        steps = (*steps, Pad(height, width, (0.0,), "top-left", after_normalize=True))
    return steps


def _resize(
    config: dict[str, Any], kind: str, size: dict[str, int], label: str, interpolation: str
) -> tuple[Step, ...]:
    """The class's resize (and ConvNeXt's crop) for a size dict of shortest_edge or height/width."""
    crop_pct = config.get("crop_pct")
    shortest = size.get("shortest_edge")
    if kind == "ConvNextImageProcessor" and shortest is None:
        raise ImportRefused(
            f"{label}: ConvNextImageProcessor resizes by shortest_edge; size {size} has none"
        )
    unknown = kind not in CLASS_DEFAULTS
    convnext = kind == "ConvNextImageProcessor" or (unknown and crop_pct is not None)
    if convnext and shortest is not None:
        if shortest >= CONVNEXT_WARP_SIZE:
            return (Resize("exact", shortest, shortest, interpolation),)
        side = int(shortest / float(crop_pct))
        return (
            Resize("shorter", side, side, interpolation),
            Crop(shortest, shortest, offset="floor"),
        )
    if kind == "PoolFormerImageProcessor" and crop_pct is not None:
        # int(side / crop_pct) of the shortest edge, or of a square size; else each side's.
        if shortest is None and size["height"] != size["width"]:
            height, width = (int(size[key] / float(crop_pct)) for key in ("height", "width"))
            return (Resize("exact", height, width, interpolation),)
        side = int((shortest or size["height"]) / float(crop_pct))
        return (Resize("shorter", side, side, interpolation),)
    if kind == "LevitImageProcessor" and shortest is not None:
        side = int((256 / 224) * shortest)  # LeViT's own expression, rounding included
        return (Resize("shorter", side, side, interpolation),)
    if shortest is not None:
        return (Resize("shorter", shortest, shortest, interpolation),)
    return (Resize("exact", size["height"], size["width"], interpolation),)
