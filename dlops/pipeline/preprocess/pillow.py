"""The geometric steps with Pillow: resize (antialiased when it shrinks), centre crop, pad.

Resize follows torchvision's PIL path (``img.resize(size, filter)``); the sizes and offsets come
from the steps (dlops/model/steps.py). Also the conversion of any decoded mode to 8-bit RGB or L
that every step starts from. No serving framework here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dlops.pipeline.preprocess.depth import HIGH_DEPTH_MODES, scale_to_unit

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# Documents and photos with transparency are shown on white, as viewers and browsers show them.
BACKDROP = (255, 255, 255)


def to_color(image: Image.Image, color: str) -> Image.Image:
    """Any Pillow mode to 8-bit ``RGB`` (also for BGR; the channels are swapped later) or ``L``."""
    if image.mode in HIGH_DEPTH_MODES:
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flattened = Image.new("RGBA", rgba.size, (*BACKDROP, 255))
        flattened.alpha_composite(rgba)
        image = flattened
    target = "L" if color == "L" else "RGB"
    return image if image.mode == target else image.convert(target)


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8 bits by its nominal range (see
    dlops/pipeline/preprocess/depth.py)."""
    unit = scale_to_unit(np.asarray(image, dtype=np.float32), image.mode)
    return Image.fromarray(np.rint(unit * 255.0).astype(np.uint8), mode="L")


def resize(image: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    """``image`` at ``size`` (width, height)."""
    return image if size == image.size else image.resize(size, RESAMPLING[interpolation])


def crop(
    image: Image.Image, origin: tuple[int, int], size: tuple[int, int], fill: tuple[int, ...]
) -> Image.Image:
    """The ``size`` (width, height) window at ``origin`` (left, top), ``fill`` outside the image."""
    left, top = origin
    if left >= 0 and top >= 0 and left + size[0] <= image.width and top + size[1] <= image.height:
        return image.crop((left, top, left + size[0], top + size[1]))
    return pad(image, (-left, -top), size, fill)


def pad(
    image: Image.Image, origin: tuple[int, int], size: tuple[int, int], fill: tuple[int, ...]
) -> Image.Image:
    """``image`` pasted at ``origin`` on a ``size`` canvas of ``fill`` (one value per band)."""
    canvas = Image.new(image.mode, size, fill[0] if image.mode == "L" else fill)
    canvas.paste(image, origin)
    return canvas
