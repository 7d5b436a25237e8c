"""Hugging Face exports (``optimum-cli export onnx``): ``preprocessor_config.json`` and
``config.json`` beside the graph, read by the rules of transformers' own image processors.

The size, resample filter, crop, rescale and normalisation come from the image processor's saved
settings (``resize`` then ``center_crop``, floored offsets, padding with 0 where smaller, as
``image_processing_backends.PilBackend`` does); ConvNeXt's ``crop_pct`` resizes the shorter side
to ``shortest_edge / crop_pct`` below 384 and warps at and above it. The channels come from
``config.json`` ``num_channels`` (labels from its ``id2label``: dlops/resolve/labels.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlops.resolve.common import (
    Finding,
    ImportRefused,
    first_line,
    numbers,
    read_json_object,
    sidecar,
)
from dlops.steps import INTERPOLATIONS, Crop, Resize, Step, final_size

# Pillow's resampling codes, as preprocessor_config.json writes them.
PILLOW_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# ConvNeXt warps instead of cropping at and above this shortest_edge.
CONVNEXT_WARP_SIZE = 384
# What an image processor class does when its saved config leaves a key out (the classes'
# defaults in transformers 5: image_processing_pil_<model>.py).
CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {"resample": 2, "size": {"height": 224, "width": 224}},
    "ConvNextImageProcessor": {"resample": 3, "size": {"shortest_edge": 384}, "crop_pct": 0.875},
}


def read(path: Path) -> Finding | None:
    config_path = sidecar(path, "preprocessor_config.json")
    if config_path is None:
        return _model_config(path)
    label = config_path.name
    config = read_json_object(config_path)
    kind = str(config.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
    config = {**CLASS_DEFAULTS.get(kind, {}), **config}
    try:
        finding = _finding(config, label)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as error:
        raise ImportRefused(f"{label}: a value dlops cannot read ({first_line(error)})") from None
    model_config = _model_config(path)
    if model_config is not None:
        finding.channels, finding.task = model_config.channels, model_config.task
    return finding


def _model_config(path: Path) -> Finding | None:
    """config.json's ``num_channels`` and ``problem_type`` (a transformers model config: it has
    ``model_type``; timm's has ``architecture`` instead)."""
    config_path = sidecar(path, "config.json")
    if config_path is None:
        return None
    config = read_json_object(config_path)
    if "model_type" not in config:
        return None
    channels = config.get("num_channels", 3)
    if channels not in (1, 3):
        raise ImportRefused(f"{config_path.name}: num_channels {channels!r}; expected 1 or 3")
    task = "multi" if config.get("problem_type") == "multi_label_classification" else None
    return Finding(source=config_path.name, channels=int(channels), task=task)


def _finding(config: dict[str, Any], label: str) -> Finding:
    finding = Finding(source=label)
    if "resample" in config:
        finding.interpolation = _interpolation(config["resample"], label)
    finding.steps = _steps(config, label, finding.interpolation or "bilinear", finding.notes)
    if finding.steps is not None:
        finding.size = final_size(finding.steps, 640, 480)[::-1]
    if config.get("do_rescale", True):
        finding.scale = float(config.get("rescale_factor", 1 / 255))
    else:
        finding.scale = 1.0
    if config.get("do_normalize", True) is False:
        finding.mean, finding.std = (0.0,), (1.0,)
    else:
        if "image_mean" in config:
            finding.mean = numbers(config["image_mean"], "image_mean", label)
        if "image_std" in config:
            finding.std = numbers(config["image_std"], "image_std", label)
    if config.get("do_convert_rgb") is False:
        finding.notes.append(
            f"{label} has do_convert_rgb false; dlops converts every picture to the input's "
            "colour all the same"
        )
    return finding


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


def _steps(
    config: dict[str, Any], label: str, interpolation: str, notes: list[str]
) -> tuple[Step, ...] | None:
    # A saved processor writes do_center_crop; without it a crop_size means one (CLIP, BiT).
    do_crop = bool(config.get("do_center_crop", "crop_size" in config))
    crop = None
    if do_crop:
        crop = Crop(*_hw(config.get("crop_size"), "crop_size", label), offset="floor")
    if "size" not in config or config.get("do_resize", True) is False:
        if crop is None:
            notes.append(
                f"{label} does not resize; the model's size comes from the graph or --size, and "
                "dlops stretches every picture to it"
            )
            return None
        return (crop,)
    size = config["size"]
    if isinstance(size, int) and not isinstance(size, bool):
        # An int is a shortest edge where the processor does not default to square (ConvNeXt).
        size = {"shortest_edge": size} if "crop_pct" in config else {"height": size, "width": size}
    resize: Step
    if isinstance(size, dict) and "shortest_edge" in size:
        shortest = int(size["shortest_edge"])
        if "longest_edge" in size:
            raise ImportRefused(
                f"{label}: size with shortest_edge and longest_edge gives no fixed input size; "
                "dlops serves classifiers of a fixed size"
            )
        if "crop_pct" in config and config["crop_pct"] is not None:
            if shortest < CONVNEXT_WARP_SIZE:
                side = int(shortest / float(config["crop_pct"]))
                steps: tuple[Step, ...] = (
                    Resize("shorter", side, side, interpolation),
                    Crop(shortest, shortest, offset="floor"),
                )
            else:
                steps = (Resize("exact", shortest, shortest, interpolation),)
            return (*steps, crop) if crop is not None else steps
        resize = Resize("shorter", shortest, shortest, interpolation)
        if crop is None:
            raise ImportRefused(
                f"{label} resizes the shorter side to {shortest} without cropping, which does not "
                "give the model a fixed size; write the steps in a <model>.preprocess.json"
            )
    else:
        resize = Resize("exact", *_hw(size, "size", label), interpolation)
    return (resize, crop) if crop is not None else (resize,)
