"""Ultralytics: a classification model from ``yolo export format=onnx``, read from the
``metadata_props`` the exporter writes (every value through str(): ``task`` "classify", ``imgsz``
"[224, 224]", ``names`` "{0: 'cat', ...}", ``channels`` "3", ...).

For an exported model Ultralytics' predictor takes imgsz from that metadata and runs
classify_transforms(imgsz) on the picture turned RGB: a square size resizes the shorter side with
Pillow's bilinear (torchvision's Resize(int)) and centre-crops, a non-square one stretches to
height x width; then ToTensor (/255) and Normalize with DEFAULT_MEAN 0 and DEFAULT_STD 1. Only a
``classify`` export is read: a detection model's metadata says nothing about classification. The
labels (``names``) are dlops/model/resolve/labels.py's.
Read (ultralytics 8.4.190): ultralytics/engine/exporter.py (Exporter.metadata, export_onnx),
ultralytics/nn/backends/base.py (apply_metadata), ultralytics/engine/predictor.py (setup_source,
preprocess), ultralytics/models/yolo/classify/predict.py, ultralytics/data/augment.py
(classify_transforms, DEFAULT_MEAN, DEFAULT_STD).
"""

from __future__ import annotations

import ast

import onnx

from dlops.model.resolve.common import Finding, ImportRefused
from dlops.model.resolve.onnx_metadata import props
from dlops.model.steps import Crop, Resize, Step

SOURCE = "metadata_props (Ultralytics classify export)"
INTERPOLATION = "bilinear"  # classify_transforms' default, which the predictor keeps
MEAN, STD = (0.0,), (1.0,)  # DEFAULT_MEAN (0, 0, 0) and DEFAULT_STD (1, 1, 1): every channel alike


def read(model: onnx.ModelProto) -> Finding | None:
    found = props(model)
    if found.get("task") != "classify" or "imgsz" not in found:
        return None
    height, width = _imgsz(found["imgsz"])
    channels = _channels(found.get("channels", "3"))
    steps: tuple[Step, ...]
    if height == width:
        steps = (Resize("shorter", height, width, INTERPOLATION), Crop(height, width))
    else:
        steps = (Resize("exact", height, width, INTERPOLATION),)
    return Finding(
        source=SOURCE,
        steps=steps,
        color="RGB" if channels == 3 else None,
        scale=1 / 255,
        mean=MEAN,
        std=STD,
        channels=channels,
        size=(height, width),
    )


def _imgsz(text: str) -> tuple[int, int]:
    """(height, width) from "[224, 224]" (check_imgsz's list) or "224"."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    sides = [value] if isinstance(value, int) else value
    if (
        not isinstance(sides, list | tuple)
        or len(sides) not in (1, 2)
        or not all(isinstance(side, int) and not isinstance(side, bool) for side in sides)
        or min(sides) <= 0
    ):
        raise ImportRefused(
            f"metadata_props['imgsz'] is {text!r}; expected the export size, e.g. [224, 224]"
        )
    return sides[0], sides[-1]


def _channels(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ImportRefused(
            f"metadata_props['channels'] is {text!r}; expected a number of channels"
        ) from None
