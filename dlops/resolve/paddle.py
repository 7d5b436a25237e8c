"""PaddlePaddle: a graph converted by paddle2onnx, whose vision pipelines read with OpenCV."""

from __future__ import annotations

import onnx

from dlops.resolve.common import Finding

# paddle2onnx names the graph "PaddlePaddle Graph ..." and the values it writes "p2o.<op>...";
# Paddle's vision pipelines (PaddleOCR, PaddleClas) read images with OpenCV, so such models were
# trained on BGR images resized by cv2.
PADDLE_VALUE_PREFIX = "p2o."


def converted_from_paddle(model: onnx.ModelProto) -> bool:
    return (
        "paddle" in model.producer_name.lower()
        or "paddle" in model.graph.name.lower()
        or any(name.startswith(PADDLE_VALUE_PREFIX) for n in model.graph.node for name in n.output)
    )


def provenance(model: onnx.ModelProto, channels: int) -> Finding | None:
    """OpenCV's conventions for a graph converted from Paddle, where the file says so."""
    if not converted_from_paddle(model):
        return None
    finding = Finding(
        source="graph (converted from Paddle: OpenCV's conventions)", resampling="opencv"
    )
    changed = "cv2.resize's sampling (no antialiasing)"
    if channels == 3:
        finding.color = "BGR"
        changed = "BGR channels and " + changed
    finding.notes.append(
        f"the graph was converted from Paddle (paddle2onnx), whose vision pipelines read images "
        f"with OpenCV, so {changed} were assumed; change them with --color and --resampling"
    )
    return finding
