"""ONNX ``metadata_props`` conventions (onnx/docs/MetadataProps.md): the pixel format and range."""

from __future__ import annotations

from typing import Any

import onnx

from dlops.model.resolve.common import Finding, ImportRefused

PIXEL_FORMAT_KEY = "Image.BitmapPixelFormat"
PIXEL_RANGE_KEY = "Image.NominalPixelRange"
PIXEL_FORMATS = {"Gray8": "L", "Rgb8": "RGB", "Bgr8": "BGR"}
PIXEL_RANGES = {  # (scale, mean, std)
    "NominalRange_0_255": (1.0, 0.0, 1.0),
    "Normalized_0_1": (1 / 255, 0.0, 1.0),
    "Normalized_1_1": (1 / 255, 0.5, 0.5),
}


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _supported(found: dict[str, str], key: str, meanings: dict[str, Any]) -> Any:
    """What the value of ``metadata_props[key]`` means; refused when dlops does not know it."""
    value = found[key]
    if value not in meanings:
        raise ImportRefused(
            f"metadata_props[{key!r}] is {value!r}, which dlops does not support "
            f"(it supports {', '.join(meanings)})"
        )
    return meanings[value]


def read(model: onnx.ModelProto) -> list[Finding]:
    found = props(model)
    findings = []
    if PIXEL_FORMAT_KEY in found:
        color = _supported(found, PIXEL_FORMAT_KEY, PIXEL_FORMATS)
        findings.append(Finding(source=f"metadata_props[{PIXEL_FORMAT_KEY!r}]", color=color))
    if PIXEL_RANGE_KEY in found:
        scale, mean, std = _supported(found, PIXEL_RANGE_KEY, PIXEL_RANGES)
        findings.append(
            Finding(
                source=f"metadata_props[{PIXEL_RANGE_KEY!r}]", scale=scale, mean=(mean,), std=(std,)
            )
        )
    return findings
