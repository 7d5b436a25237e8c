"""timm: the ``config.json`` that ``push_to_hf_hub`` / ``save_for_hf`` write beside the weights,
read as timm's own evaluation transform would be built from it.

timm builds its eval transform from ``pretrained_cfg`` alone (``resolve_data_config``, which fills
what the file leaves out: 3x224x224, bicubic, crop_pct 0.875, crop_mode center, ImageNet mean and
std), so the same settings give the same steps here. A transformers config (``model_type``) is
dlops/model/resolve/huggingface.py's; the labels (``label_names``) are
dlops/model/resolve/labels.py's. Read: timm/models/_hub.py (save_config_for_hf, _parse_model_cfg),
timm/data/config.py (resolve_data_config), timm/data/transforms_factory.py
(transforms_imagenet_eval), timm/data/transforms.py (ResizeKeepRatio, center_crop_or_pad),
timm/data/constants.py.
"""

from __future__ import annotations

import math
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
from dlops.model.steps import INTERPOLATIONS, Crop, Resize, Step

# resolve_data_config's values where pretrained_cfg has none (timm/data/constants.py).
DEFAULT_INPUT_SIZE = (3, 224, 224)
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_PCT = 0.875
DEFAULT_CROP_MODE = "center"
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("center", "squash", "border")
# transforms_imagenet_eval builds ResizeKeepRatio(scale_size) without the configured filter for a
# non-square centre crop, so ResizeKeepRatio's own default applies there.
RESIZE_KEEP_RATIO_INTERPOLATION = "bilinear"


def read(path: Path) -> Finding | None:
    config_path = sidecar(path, "config.json")
    if config_path is None:
        return None
    config = read_json_object(config_path)
    if "model_type" in config or "architecture" not in config:
        return None  # a transformers config, or not timm's
    label = config_path.name
    # Older timm wrote pretrained_cfg's keys at the top level (_parse_model_cfg reads both).
    pretrained = config.get("pretrained_cfg", config)
    if not isinstance(pretrained, dict):
        raise ImportRefused(f"{label}: pretrained_cfg is {pretrained!r}, not an object")
    try:
        return _finding(pretrained, label)
    except (TypeError, ValueError) as error:
        raise ImportRefused(
            f"{label}: a pretrained_cfg value dlops cannot read ({first_line(error)})"
        ) from None


def _setting(pretrained: dict[str, Any], key: str, default: Any) -> Any:
    """resolve_data_config's rule for the other settings: the file's value where it is truthy,
    else timm's default."""
    return pretrained.get(key) or default


def _finding(pretrained: dict[str, Any], label: str) -> Finding:
    input_size = pretrained.get("input_size")  # resolve_data_config: set unless None
    if input_size is None:
        input_size = DEFAULT_INPUT_SIZE
    if not isinstance(input_size, list | tuple) or len(input_size) != 3:
        raise ImportRefused(f"{label}: input_size {input_size!r} is not [channels, height, width]")
    channels, height, width = (int(value) for value in input_size)
    interpolation = str(_setting(pretrained, "interpolation", DEFAULT_INTERPOLATION))
    if interpolation not in INTERPOLATIONS:
        raise ImportRefused(
            f"{label}: interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
        )
    crop_pct = float(_setting(pretrained, "crop_pct", DEFAULT_CROP_PCT))
    crop_mode = _setting(pretrained, "crop_mode", DEFAULT_CROP_MODE)
    if crop_mode not in CROP_MODES:
        raise ImportRefused(
            f"{label}: crop_mode {crop_mode!r} is not one of {', '.join(CROP_MODES)}"
        )
    mean = numbers(_setting(pretrained, "mean", IMAGENET_DEFAULT_MEAN), "mean", label)
    std = numbers(_setting(pretrained, "std", IMAGENET_DEFAULT_STD), "std", label)
    steps = _steps(height, width, crop_pct, crop_mode, interpolation, mean)
    return Finding(
        source=label,
        steps=steps,
        color="RGB" if channels == 3 else None,
        scale=1 / 255,  # ToTensor
        mean=mean,
        std=std,
        channels=channels,
        size=(height, width),
    )


def _steps(
    height: int,
    width: int,
    crop_pct: float,
    crop_mode: str,
    interpolation: str,
    mean: tuple[float, ...],
) -> tuple[Step, ...]:
    """transforms_imagenet_eval, step for step (torchvision's Resize and CenterCrop on PIL)."""
    scale_height, scale_width = math.floor(height / crop_pct), math.floor(width / crop_pct)
    crop = Crop(height, width)  # torchvision's CenterCrop: round() offsets, 0 where it pads
    if crop_mode == "squash":
        return Resize("exact", scale_height, scale_width, interpolation), crop
    if crop_mode == "border":
        # ResizeKeepRatio(longest=1.0): the whole picture inside scale_size, then
        # CenterCropOrPad filled with round(255 * mean).
        fill = tuple(float(round(255 * value)) for value in mean)
        resize = Resize("fit", scale_height, scale_width, interpolation, rounding="round")
        return resize, Crop(height, width, fill=fill)
    if scale_height == scale_width:
        # Resize(int): the shorter side, the longer int(size * long / short).
        return Resize("shorter", scale_height, scale_height, interpolation), crop
    resize = Resize(
        "cover", scale_height, scale_width, RESIZE_KEEP_RATIO_INTERPOLATION, rounding="round"
    )
    return resize, crop
