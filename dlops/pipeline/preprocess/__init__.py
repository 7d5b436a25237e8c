"""A decoded image to one example of the model's input tensor, as the model's spec says.

The picture is converted to the spec's colour, then the steps (dlops/model/steps.py) run in order:
``digit`` (digit.py), or resizes, crops and pads with Pillow (pillow.py) or with OpenCV's
sampling (opencv.py). :class:`Preprocessor` then scales, normalises, pads what is padded after
normalisation, lays the values out (CHW, HWC or HW) and casts them to the input's dtype.
No serving framework here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dlops.model.spec import InputSpec, ModelSpec, PreprocessSpec
from dlops.model.steps import Crop, Digit, Pad, Resize, Step
from dlops.pipeline.preprocess import digit, opencv, pillow

NUMPY_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
# Large pictures are decoded reduced (dlops/pipeline/decode.py) to no fewer than twice the pixels,
# on each side, that the first resize keeps, when it antialiases: its filter still sees every
# detail.
RESIZE_MARGIN = 2
# The digit preprocessing looks for the digit in the whole picture; a longer side of this many
# pixels still draws a digit a twentieth of the picture wide with more pixels than MNIST's box.
DIGIT_WORKING_SIDE = 1024
# The most memory the preprocessing holds at once per pixel of the decoded picture: the digit
# step's float32 lightness, ink and background maps and masks; the other steps' RGBA copies.
DIGIT_WORKING_BYTES_PER_PIXEL = 48
WORKING_BYTES_PER_PIXEL = 16

Picture = Image.Image | np.ndarray  # an OpenCV-sampled window is an array until a Pillow step


class Preprocessor:
    """``preprocessor(image)`` -> one example (no batch dimension), ready to stack and feed."""

    def __init__(self, spec: ModelSpec) -> None:
        self.input: InputSpec = spec.input
        self.preprocess: PreprocessSpec = spec.preprocess
        self.dtype = NUMPY_DTYPES[self.input.dtype]
        steps = self.preprocess.steps
        self._digit = steps[0] if isinstance(steps[0], Digit) else None
        # check_steps guarantees that pads after normalisation come last.
        self._after = tuple(s for s in steps if isinstance(s, Pad) and s.after_normalize)
        self._geometry: tuple[Step, ...] = steps[: len(steps) - len(self._after)]
        # (pixel * scale - mean) / std as one multiply-add per channel, in float32.
        std = np.asarray(self.preprocess.std, dtype=np.float32)
        self._gain = np.float32(self.preprocess.scale) / std
        self._offset = -np.asarray(self.preprocess.mean, dtype=np.float32) / std
        # One example's size in memory: the input's shape for one image, in its dtype.
        self.example_bytes = int(np.prod(self.input.shape(1))) * np.dtype(self.dtype).itemsize

    def reduction(self, width: int, height: int) -> int:
        """The integer factor a ``width`` x ``height`` picture may shrink by before ``pixels``."""
        if self._digit is not None:
            return max(1, max(width, height) // DIGIT_WORKING_SIDE)
        first = self._geometry[0] if self._geometry else None
        # A resize that does not antialias (cv2's, or nearest) samples the full picture's own
        # pixels: a reduced decode would be another input, so it gets the picture whole.
        if not isinstance(first, Resize) or not first.antialiases:
            return 1
        # Bounds that hold whichever way EXIF turns the picture.
        if first.to == "longer":
            return max(1, max(width, height) // (RESIZE_MARGIN * first.height))
        needed = max(first.height, first.width)
        return max(1, min(width, height) // (RESIZE_MARGIN * needed))

    def working_bytes(self, width: int, height: int) -> int:
        """An upper bound of what ``pixels`` holds for a decoded ``width`` x ``height`` picture."""
        digit_step = self._digit is not None
        per_pixel = DIGIT_WORKING_BYTES_PER_PIXEL if digit_step else WORKING_BYTES_PER_PIXEL
        return width * height * per_pixel

    def pixels(self, image: Image.Image) -> np.ndarray:
        """uint8 [H, W] or [H, W, 3] after the geometric steps, in the spec's colour order."""
        if self._digit is not None:
            return digit.to_mnist_digit(image, size=self._digit.size)
        color = self.preprocess.color
        picture: Picture = pillow.to_color(image, color)
        steps, index = self._geometry, 0
        while index < len(steps):
            step = steps[index]
            index += 1
            if isinstance(step, Resize) and step.resampling == "opencv":
                as_image = _as_image(picture)
                resized = step.output_size(*as_image.size)
                # A crop right after is sampled directly: only the pixels kept are computed.
                following = steps[index] if index < len(steps) else None
                if isinstance(following, Crop) and _inside(following, resized):
                    origin, size = following.origin(*resized), (following.width, following.height)
                    index += 1
                else:
                    origin, size = (0, 0), resized
                picture = opencv.window(as_image, resized, origin, size, step.interpolation)
                continue
            as_image = _as_image(picture)
            if isinstance(step, Resize):
                picture = pillow.resize(
                    as_image, step.output_size(*as_image.size), step.interpolation
                )
            elif isinstance(step, Crop):
                picture = pillow.crop(
                    as_image,
                    step.origin(*as_image.size),
                    (step.width, step.height),
                    _fill(step.fill, color),
                )
            elif isinstance(step, Pad):
                picture = pillow.pad(
                    as_image,
                    step.origin(*as_image.size),
                    (step.width, step.height),
                    _fill(step.value, color),
                )
        pixels = np.asarray(picture, dtype=np.uint8)
        return pixels[..., ::-1] if color == "BGR" else pixels

    def tensor(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels -> the input's layout and dtype, scaled, normalised and padded."""
        if self.input.dtype == "uint8":
            values = pixels  # validate() guarantees no scaling for uint8 inputs
        else:
            values = pixels.astype(np.float32)
            if values.ndim == 2:
                values = values * self._gain[0] + self._offset[0]
            else:
                values = values * self._gain + self._offset
        for pad in self._after:
            values = _pad_values(values, pad)
        if self.input.layout == "NCHW":
            values = values[None] if values.ndim == 2 else values.transpose(2, 0, 1)
        elif self.input.layout == "NHWC" and values.ndim == 2:
            values = values[..., None]
        return np.ascontiguousarray(values, dtype=self.dtype)

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.tensor(self.pixels(image))


def _as_image(picture: Picture) -> Image.Image:
    return picture if isinstance(picture, Image.Image) else Image.fromarray(picture)


def _inside(crop: Crop, size: tuple[int, int]) -> bool:
    return size[0] >= crop.width and size[1] >= crop.height


def _fill(value: tuple[float, ...], color: str) -> tuple[int, ...]:
    """Pixel values given in the model's channel order; the pictures are RGB until the end."""
    if len(value) == 1:
        value = value * (1 if color == "L" else 3)
    return tuple(round(item) for item in (value[::-1] if color == "BGR" else value))


def _pad_values(values: np.ndarray, pad: Pad) -> np.ndarray:
    """Normalised values [h, w(, c)] on a pad.height x pad.width canvas of the pad's values."""
    height, width = values.shape[:2]
    canvas = np.empty((pad.height, pad.width, *values.shape[2:]), dtype=values.dtype)
    canvas[...] = pad.value if values.ndim == 3 or len(pad.value) == 1 else pad.value[0]
    left, top = pad.origin(width, height)
    canvas[top : top + height, left : left + width] = values
    return canvas
