"""The ``resize-crop`` and ``resize`` preprocessing: a decoded photo to the model's pixel grid.

``resize-crop`` follows torchvision's PIL path (``Resize(size)`` then ``CenterCrop``): the shorter
side becomes ``size`` and the longer ``int(size * long / short)``; the crop's offset is
``int(round((side - crop) / 2))``. ``resize`` stretches the image to height x width. Both resample
with Pillow, which antialiases when it shrinks. No serving framework here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dlops.preprocess.depth import HIGH_DEPTH_MODES, scale_to_unit

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
    """16-bit and float greyscale to 8 bits by its nominal range (see dlops/preprocess/depth.py)."""
    unit = scale_to_unit(np.asarray(image, dtype=np.float32), image.mode)
    return Image.fromarray(np.rint(unit * 255.0).astype(np.uint8), mode="L")


def shorter_side_to(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    if width <= height:
        target = (size, int(size * height / width))
    else:
        target = (int(size * width / height), size)
    return image if target == image.size else image.resize(target, resample)


def centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    image_width, image_height = image.size
    top = round((image_height - height) / 2.0)
    left = round((image_width - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def resize_crop(
    image: Image.Image, resize: int, height: int, width: int, interpolation: str, color: str
) -> np.ndarray:
    """uint8 [height, width, 3] (RGB or BGR order) or [height, width] for ``L``."""
    resample = RESAMPLING[interpolation]
    cropped = centre_crop(shorter_side_to(to_color(image, color), resize, resample), height, width)
    return _pixels(cropped, color)


def stretch(
    image: Image.Image, height: int, width: int, interpolation: str, color: str
) -> np.ndarray:
    """uint8 [height, width, 3] (RGB or BGR order) or [height, width] for ``L``."""
    colored = to_color(image, color)
    if colored.size != (width, height):
        colored = colored.resize((width, height), RESAMPLING[interpolation])
    return _pixels(colored, color)


def _pixels(image: Image.Image, color: str) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., ::-1] if color == "BGR" else pixels
