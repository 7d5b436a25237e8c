"""``cv2.resize``'s uint8 INTER_LINEAR, bit for bit, for a window of the result and without OpenCV.

cv2 rounds in fixed point (11-bit weights, a ``mulhi`` vertical pass) where Pillow's bilinear does
not, so Pillow at cv2's sample points leaves about a third of the pixels one grey level below it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WEIGHT_BITS = 11  # cv2's INTER_RESIZE_COEF_BITS
WEIGHT_ONE = 1 << WEIGHT_BITS


def _taps(
    resized: int, source: int, first: int, count: int, clamp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both source indices and int32 weights of output pixels ``first .. first + count - 1``.

    As cv::hal::resize computes them: the sample point in float32 from a double scale, both weights
    ``saturate_cast<short>`` (round half to even) of float32 ``1 - f`` and ``f`` times 2048.
    Across (``clamp``), a point left of pixel 0 or at or right of the last pixel takes that pixel
    with f = 0; down, the rows are clipped to the image but the weights keep f.
    """
    scale = 1.0 / (resized / source)  # cv2 inverts its inverse scale
    points = ((np.arange(first, first + count, dtype=np.float64) + 0.5) * scale - 0.5).astype(
        np.float32
    )
    floor = np.floor(points)
    fraction = (points - floor).astype(np.float32)
    index = floor.astype(np.int64)
    if clamp:
        outside = (index < 0) | (index >= source - 1)
        fraction[outside] = 0
        index = np.clip(index, 0, source - 1)
    near = np.clip(index, 0, source - 1)
    far = np.clip(index + 1, 0, source - 1)
    one_minus = (np.float32(1) - fraction).astype(np.float32)
    near_weight = np.rint(one_minus * np.float32(WEIGHT_ONE)).astype(np.int32)
    far_weight = np.rint(fraction * np.float32(WEIGHT_ONE)).astype(np.int32)
    return near, far, near_weight, far_weight


def linear_window(
    image: Image.Image, resized: tuple[int, int], offset: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The ``size`` (width, height) window at ``offset`` (left, top) of the image resized to
    ``resized`` (width, height) as cv2's INTER_LINEAR makes it: uint8 [h, w] for ``L``, [h, w, 3]
    for ``RGB``.

    Only the source rows and columns the window's taps reach are read. Across, each output is
    ``S[x0] * a0 + S[x1] * a1`` in int32; down, ``((b0 * (H0 >> 4)) >> 16) + ((b1 * (H1 >> 4))
    >> 16)`` rounded by ``(+ 2) >> 2``: cv2's scalar and SIMD vertical passes alike. (cv2 sends an
    exact halving to INTER_AREA's ``(a + b + c + d + 2) >> 2``, which this also yields there.)
    """
    if image.mode not in ("L", "RGB"):
        raise ValueError(f"linear_window takes L or RGB images, not {image.mode}")
    if not all(
        0 <= start <= end - extent and extent > 0
        for start, end, extent in zip(offset, resized, size, strict=True)
    ):
        raise ValueError(f"window {size} at {offset} is not inside the resized {resized}")
    x_near, x_far, x_near_weight, x_far_weight = _taps(
        resized[0], image.width, offset[0], size[0], clamp=True
    )
    y_near, y_far, y_near_weight, y_far_weight = _taps(
        resized[1], image.height, offset[1], size[1], clamp=False
    )
    left, right = int(x_near.min()), int(x_far.max()) + 1
    top, bottom = int(y_near.min()), int(y_far.max()) + 1
    box = np.asarray(image.crop((left, top, right, bottom)), dtype=np.uint8)
    channels = 1 if box.ndim == 2 else box.shape[2]
    # Down, only the rows the window's taps reach; across, each tap's column with its channels
    # side by side, so both gathers are on 2-D uint8 and the arithmetic runs on [rows, w * c].
    rows, row_of = np.unique(np.concatenate([y_near, y_far]) - top, return_inverse=True)
    lines = box.reshape(box.shape[0], -1)[rows]
    band = np.arange(channels)
    near = lines.take(((x_near - left)[:, None] * channels + band).ravel(), axis=1)
    far = lines.take(((x_far - left)[:, None] * channels + band).ravel(), axis=1)
    across = near.astype(np.int32)
    across *= np.repeat(x_near_weight, channels)
    across += far * np.repeat(x_far_weight, channels)
    across >>= 4  # cv2 keeps 16 bits of the horizontal sums for its mulhi
    down = across[row_of[: size[1]]]
    down *= y_near_weight[:, None]
    down >>= 16
    lower = across[row_of[size[1] :]]
    lower *= y_far_weight[:, None]
    lower >>= 16
    down += lower
    down += 2
    down >>= 2
    window = np.clip(down, 0, 255).astype(np.uint8).reshape(size[1], size[0], channels)
    return window[..., 0] if image.mode == "L" else window
