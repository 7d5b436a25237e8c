"""A decoded image to one example of the model's input tensor, as the model's spec says.

Each mode (``digit.py``, ``resize_crop.py``, or ``opencv.py`` for OpenCV's resampling) makes
uint8 pixels at the input's size;
:class:`Preprocessor` then scales, normalises, lays them out (CHW, HWC or HW) and casts them to
the input's dtype. No serving framework here.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dlops.preprocess import digit, opencv, resize_crop
from dlops.spec import InputSpec, ModelSpec, PreprocessSpec

NUMPY_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
# Large pictures are decoded reduced (dlops/decode.py) to no fewer than twice the pixels, on each
# side, that the resize keeps: its antialiasing filter still sees every detail it would keep.
RESIZE_MARGIN = 2
# The digit preprocessing looks for the digit in the whole picture; a longer side of this many
# pixels still draws a digit a twentieth of the picture wide with more pixels than MNIST's box.
DIGIT_WORKING_SIDE = 1024
# The most memory the preprocessing holds at once per pixel of the decoded picture: the digit
# mode's float32 lightness, ink and background maps and masks; the resize modes' RGBA copies.
WORKING_BYTES_PER_PIXEL = {"digit": 48, "resize-crop": 16, "resize": 16}


class Preprocessor:
    """``preprocessor(image)`` -> one example (no batch dimension), ready to stack and feed."""

    def __init__(self, spec: ModelSpec) -> None:
        self.input: InputSpec = spec.input
        self.preprocess: PreprocessSpec = spec.preprocess
        self.dtype = NUMPY_DTYPES[self.input.dtype]
        # (pixel * scale - mean) / std as one multiply-add per channel, in float32.
        std = np.asarray(self.preprocess.std, dtype=np.float32)
        self._gain = np.float32(self.preprocess.scale) / std
        self._offset = -np.asarray(self.preprocess.mean, dtype=np.float32) / std

    def reduction(self, width: int, height: int) -> int:
        """The integer factor a ``width`` x ``height`` picture may shrink by before ``pixels``."""
        pre, source = self.preprocess, self.input
        if pre.mode == "digit":
            return max(1, max(width, height) // DIGIT_WORKING_SIDE)
        # The shorter side bounds both modes whichever way EXIF turns the picture.
        needed = pre.resize if pre.mode == "resize-crop" else max(source.height, source.width)
        assert needed is not None  # validate() guarantees a resize for resize-crop
        return max(1, min(width, height) // (RESIZE_MARGIN * needed))

    def working_bytes(self, width: int, height: int) -> int:
        """An upper bound of what ``pixels`` holds for a decoded ``width`` x ``height`` picture."""
        return width * height * WORKING_BYTES_PER_PIXEL[self.preprocess.mode]

    def pixels(self, image: Image.Image) -> np.ndarray:
        """uint8 [H, W] or [H, W, 3] at the input's size, in the spec's colour order."""
        source, pre = self.input, self.preprocess
        if pre.mode == "digit":
            return digit.to_mnist_digit(image, size=source.height)
        mode = opencv if pre.resampling == "opencv" else resize_crop
        if pre.mode == "resize-crop":
            assert pre.resize is not None  # validate() guarantees it
            return mode.resize_crop(
                image, pre.resize, source.height, source.width, pre.interpolation, pre.color
            )
        return mode.stretch(image, source.height, source.width, pre.interpolation, pre.color)

    def tensor(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels -> the input's layout and dtype, scaled and normalised."""
        if self.input.dtype == "uint8":
            values = pixels  # validate() guarantees no scaling for uint8 inputs
        else:
            values = pixels.astype(np.float32)
            if values.ndim == 2:
                values = values * self._gain[0] + self._offset[0]
            else:
                values = values * self._gain + self._offset
        if self.input.layout == "NCHW":
            values = values[None] if values.ndim == 2 else values.transpose(2, 0, 1)
        elif self.input.layout == "NHWC" and values.ndim == 2:
            values = values[..., None]
        return np.ascontiguousarray(values, dtype=self.dtype)

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.tensor(self.pixels(image))
