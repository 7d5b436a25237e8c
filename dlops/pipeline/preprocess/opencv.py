"""A resize as ``cv2.resize`` makes it, with Pillow and numpy: OpenCV-based training pipelines.

``cv2.resize`` does not antialias: each output pixel is the source interpolated at
``(x + 0.5) * src / dst - 0.5``, whatever the scale. Pipelines built on it (PaddleOCR and
PaddleClas among them) also size the shorter side with ``int(round())`` and floor the crop's
offset (the steps say so: dlops/model/steps.py). Only the pixels of the window kept are computed:
nearest and bicubic by Pillow's affine transform at cv2's sample points; bilinear by cv2's own
fixed-point arithmetic (cv2_linear.py) and lanczos by its INTER_LANCZOS4 arithmetic (8 taps,
11-bit fixed-point weights, one rounding), both reproducing cv2.resize exactly. No OpenCV needed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dlops.pipeline.preprocess.cv2_linear import linear_window

AFFINE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
}
LANCZOS_TAPS = 8
WEIGHT_ONE = 2048  # cv2's INTER_RESIZE_COEF_SCALE: weights are multiples of 1/2048
_S45 = 0.70710678118654752440084436210485
# interpolateLanczos4's (sin, cos) coefficients of each tap (imgproc/src/imgwarp.cpp).
LANCZOS_PHASES = (
    (1, 0),
    (-_S45, -_S45),
    (0, 1),
    (_S45, -_S45),
    (-1, 0),
    (_S45, _S45),
    (0, -1),
    (-_S45, _S45),
)


def window(
    image: Image.Image,
    resized: tuple[int, int],
    offset: tuple[int, int],
    size: tuple[int, int],
    interpolation: str,
) -> np.ndarray:
    """The ``size`` window at ``offset`` of the image as cv2.resize would make it ``resized``."""
    if interpolation == "lanczos":
        return _lanczos4(image, resized, offset, size)
    if interpolation == "bilinear":
        return linear_window(image, resized, offset, size)
    scale_x, scale_y = image.width / resized[0], image.height / resized[1]
    # Output pixel centre x + 0.5 maps to (x + left + 0.5) * scale: cv2's sample point, in
    # Pillow's convention where pixel i spans [i, i + 1).
    matrix = (scale_x, 0.0, scale_x * offset[0], 0.0, scale_y, scale_y * offset[1])
    sampled = image.transform(
        size, Image.Transform.AFFINE, matrix, resample=AFFINE_FILTERS[interpolation]
    )
    return np.asarray(sampled, dtype=np.uint8)


def _lanczos4_taps(resized: int, source: int, first: int, count: int) -> tuple[np.ndarray, ...]:
    """Source indices and fixed-point weights of output pixels ``first .. first + count - 1``."""
    scale = 1.0 / (resized / source)  # as cv2 computes it, from its inverse scale
    points = ((np.arange(first, first + count, dtype=np.float64) + 0.5) * scale - 0.5).astype(
        np.float32
    )
    floor = np.floor(points)
    weights = _lanczos4_weights(points - floor)
    index = np.clip(floor.astype(np.int64)[:, None] + np.arange(-3, 5), 0, source - 1)
    return index, np.rint(weights * np.float32(WEIGHT_ONE))


def _lanczos4_weights(fraction: np.ndarray) -> np.ndarray:
    """cv2's interpolateLanczos4 for float32 fractions [n] -> float32 weights [n, 8]: each tap in
    double from one sine and cosine, stored as float32, summed and normalised in float32, so that
    a weight rounds to the same 1/2048 as cv2's."""
    shifted = (fraction + np.float32(3)).astype(np.float32)  # x + 3, in float as cv2 adds it
    y0 = -shifted.astype(np.float64) * np.pi * 0.25
    sine, cosine = np.sin(y0), np.cos(y0)
    weights = np.empty((len(fraction), LANCZOS_TAPS), dtype=np.float32)
    total = np.zeros(len(fraction), dtype=np.float32)
    for tap, (a, b) in enumerate(LANCZOS_PHASES):
        offset = (shifted - np.float32(tap)).astype(np.float32)
        y = -offset.astype(np.float64) * np.pi * 0.25
        with np.errstate(divide="ignore", invalid="ignore"):
            value = ((a * sine + b * cosine) / (y * y)).astype(np.float32)
        weights[:, tap] = np.where(np.abs(offset) >= np.float32(1e-6), value, np.float32(1e30))
        total += weights[:, tap]
    return weights * (np.float32(1) / total)[:, None]


def _lanczos4(
    image: Image.Image, resized: tuple[int, int], offset: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """cv2's INTER_LANCZOS4 for the window alone.

    cv2 sums integer weights times pixels exactly and rounds once, ``(sum + 2**21) >> 22``; the
    sum does not depend on the order, so the vertical pass (exact in float32) comes first, over
    only the source rows the window's taps reach, then the horizontal one (exact in float64).
    """
    x_index, x_weights = _lanczos4_taps(resized[0], image.width, offset[0], size[0])
    y_index, y_weights = _lanczos4_taps(resized[1], image.height, offset[1], size[1])
    left, top = int(x_index.min()), int(y_index.min())
    box = (left, top, int(x_index.max()) + 1, int(y_index.max()) + 1)
    source = np.asarray(image.crop(box), dtype=np.float32)
    if source.ndim == 2:
        source = source[..., None]
    x_index, y_index = x_index - left, y_index - top
    down = np.zeros((size[1], source.shape[1], source.shape[2]), dtype=np.float32)
    for tap in range(LANCZOS_TAPS):
        down += source[y_index[:, tap]] * y_weights[:, tap, None, None]
    across = np.zeros((size[1], size[0], source.shape[2]), dtype=np.float64)
    for tap in range(LANCZOS_TAPS):
        across += down[:, x_index[:, tap]] * x_weights[None, :, tap, None].astype(np.float64)
    window = np.clip(np.floor((across + 2**21) / 2**22), 0, 255).astype(np.uint8)
    return window[..., 0] if image.mode == "L" else window
