"""dlops.pipeline.decode and the digit preprocessing on real MNIST digits and real uploads; no
model.

The fixtures (tests/fixtures/make_fixtures.py) are held-out MNIST digits and variants of four of
them: photographed, drawn on a canvas, rotated by a camera, in every mode and format accepted.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile

from dlops.pipeline.decode import ImageError, ImageTooLargeError, NotAnImageError, decode_image
from dlops.pipeline.preprocess import digit as imaging
from dlops.pipeline.preprocess.digit import (
    NoInkError,
    mnist_normalise,
    to_grayscale_ink,
    to_model_input,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DIGITS = sorted((FIXTURES / "digits").glob("*.png"))
VARIANTS = sorted((FIXTURES / "variants").iterdir())
SIZE = 28
BOX = 20
# Outputs are compared with the original MNIST digit up to one whole pixel of translation: MNIST
# centres by integer shifts, so a centre of mass at 13.49 or 13.51 lands a pixel apart, which
# alone drops the correlation of thin strokes below 0.7 although the digits are the same.
MIN_CORRELATION = 0.8


def pixels_of(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def original_of(variant: Path) -> np.ndarray:
    match = re.match(r"(test\d{4}_digit\d)_", variant.name)
    assert match, variant.name
    return pixels_of(FIXTURES / "digits" / f"{match.group(1)}.png")


def encoded(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(first.ravel().astype(float), second.ravel().astype(float))[0, 1])


def shift_tolerant_correlation(output: np.ndarray, reference: np.ndarray) -> float:
    return max(
        correlation(np.roll(output, (rows, columns), axis=(0, 1)), reference)
        for rows in (-1, 0, 1)
        for columns in (-1, 0, 1)
    )


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    mass = digit.astype(float)
    total = mass.sum()
    return (
        float(mass.sum(axis=1) @ np.arange(mass.shape[0]) / total),
        float(mass.sum(axis=0) @ np.arange(mass.shape[1]) / total),
    )


def ink_box(digit: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(digit.any(axis=1))
    columns = np.flatnonzero(digit.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def assert_mnist_like(output: np.ndarray, size: int = SIZE) -> None:
    """The conventions of MNIST: uint8 field, digit in the box, centred by mass, full contrast."""
    assert output.dtype == np.uint8
    assert output.shape == (size, size)
    assert int(output.max()) >= 253  # MNIST's own digits peak at 253..255; stretched ones at 255
    box = round(size * BOX / SIZE)
    height, width = ink_box(output)
    assert height <= box and width <= box
    row_com, column_com = centre_of_mass(output)
    # Whole-pixel centring leaves the centre of mass within half a pixel of size/2.
    assert abs(row_com - size / 2) <= 0.5 + 1e-9
    assert abs(column_com - size / 2) <= 0.5 + 1e-9


def assert_same_digit(output: np.ndarray, original: np.ndarray) -> None:
    assert_mnist_like(output)
    assert shift_tolerant_correlation(output, mnist_normalise(original)) > MIN_CORRELATION


def three() -> np.ndarray:
    return pixels_of(FIXTURES / "digits" / "test0300_digit3.png")


def page_photo(
    rng: np.random.Generator, digit: np.ndarray | None, shadow: float, noise: float
) -> bytes:
    """A 500x500 JPEG of grainy paper, darkened towards one corner, with the digit drawn dark."""
    rows, columns = np.mgrid[0:500, 0:500]
    page = 230.0 - shadow * np.clip((rows + columns) / 1000 - 0.5, 0, None) * 2
    page = page + rng.normal(0.0, noise, page.shape)
    if digit is not None:
        ink = np.asarray(Image.fromarray(digit).resize((300, 300), Image.Resampling.BICUBIC))
        page[100:400, 100:400] *= 1.0 - 0.8 * ink / 255.0
    return encoded(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)), "JPEG", quality=75)


def test_fixtures_are_there() -> None:
    assert len(DIGITS) == 24
    assert sum("_digit3" in path.name for path in DIGITS) == 6
    assert len(VARIANTS) >= 40
    assert sum(path.stat().st_size for path in DIGITS + VARIANTS) < 300_000


# --- fast path: real MNIST digits reach the model bit-exactly --------------------------------


@pytest.mark.parametrize("path", DIGITS, ids=lambda path: path.stem)
def test_mnist_digits_pass_unchanged_through_the_fast_path(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_pipeline(image: Image.Image) -> np.ndarray:
        raise AssertionError("an MNIST digit took the full pipeline")

    monkeypatch.setattr(imaging, "to_grayscale_ink", full_pipeline)
    original = pixels_of(path)
    output = to_model_input(path.read_bytes())
    assert output.dtype == np.uint8
    np.testing.assert_array_equal(output, original)
    assert output.flags.writeable


def test_mnist_normalise_returns_an_mnist_digit_unchanged() -> None:
    original = three()
    np.testing.assert_array_equal(mnist_normalise(original), original)


def _is_mnist_normalised_reference(pixels: np.ndarray, size: int = 28) -> bool:
    """The fast path's test written plainly: ink peaks at >= 250, the nonzero pixels' box is
    under 20 x 20, the centre of mass within one pixel of the middle."""
    if pixels.max() < 250:
        return False
    rows, columns = np.nonzero(pixels)
    if np.ptp(rows) >= 20 or np.ptp(columns) >= 20:
        return False
    weights = pixels.astype(np.float64)
    row_com = (weights.sum(axis=1) * np.arange(size)).sum() / weights.sum()
    column_com = (weights.sum(axis=0) * np.arange(size)).sum() / weights.sum()
    return abs(row_com - size / 2) <= 1.0 and abs(column_com - size / 2) <= 1.0


def test_the_fast_path_test_agrees_with_its_plain_statement() -> None:
    rng = np.random.default_rng(13)
    passed = 0
    for _ in range(3000):
        pixels = np.zeros((28, 28), np.uint8)
        height, width = rng.integers(1, 23, 2)
        top, left = rng.integers(0, 29 - height), rng.integers(0, 29 - width)
        ink = rng.integers(0, 256, (height, width)) * (rng.random((height, width)) < 0.6)
        pixels[top : top + height, left : left + width] = ink
        if rng.random() < 0.5:
            pixels[top + height // 2, left + width // 2] = 255
        expected = pixels.any() and _is_mnist_normalised_reference(pixels)
        assert imaging._is_mnist_normalised(pixels, 28) == expected, pixels
        passed += expected
    assert 30 < passed < 2970  # both answers were exercised
    assert not imaging._is_mnist_normalised(np.zeros((28, 28), np.uint8), 28)


def test_an_off_centre_mnist_digit_is_recentred_not_passed_through() -> None:
    shifted = np.zeros_like(three())
    shifted[3:, :-3] = three()[:-3, 3:]
    assert shifted.sum() == three().sum()  # moved down-left, nothing cut off
    output = to_model_input(encoded(Image.fromarray(shifted)))
    assert_same_digit(output, three())


# --- every format and client: the variants match their originals -----------------------------


@pytest.mark.parametrize("path", VARIANTS, ids=lambda path: path.name)
def test_variant_normalises_to_its_original(path: Path) -> None:
    assert_same_digit(to_model_input(path.read_bytes()), original_of(path))


@pytest.mark.parametrize(
    ("variant", "image_format"),
    [
        ("jpeg_black_on_white.jpg", "JPEG"),
        ("canvas_rgba.png", "PNG"),
        ("exif_rotated.jpg", "JPEG"),
        ("gray16.png", "PNG"),
        ("cmyk.jpg", "JPEG"),
        ("palette.png", "PNG"),
        ("webp.webp", "WEBP"),
        ("two_frames.gif", "GIF"),
        ("bmp.bmp", "BMP"),
        ("tiff.tiff", "TIFF"),
    ],
)
def test_variant_fixtures_are_what_their_names_say(variant: str, image_format: str) -> None:
    image = Image.open(next(FIXTURES.glob(f"variants/test0300_digit3_{variant}")))
    assert image.format == image_format
    expected_modes = {"gray16.png": "I;16", "cmyk.jpg": "CMYK", "palette.png": "P"}
    if variant in expected_modes:
        assert image.mode == expected_modes[variant]
    if variant == "canvas_rgba.png":
        alpha = np.asarray(image.getchannel("A"))
        assert image.mode == "RGBA" and alpha[0, 0] == 0 and alpha.max() == 255
    if variant == "two_frames.gif":
        assert image.n_frames == 2


def test_exif_orientation_is_applied() -> None:
    path = next(FIXTURES.glob("variants/test0300_digit3_exif_rotated.jpg"))
    stored = Image.open(path)
    assert stored.getexif()[0x0112] == 6
    # The stored pixels lie on their side: read without the tag they are not the digit.
    sideways = mnist_normalise(to_grayscale_ink(stored.convert("L")))
    assert shift_tolerant_correlation(sideways, three()) < 0.5
    upright = decode_image(path.read_bytes())
    assert upright.size == (stored.size[1], stored.size[0])
    assert_same_digit(to_model_input(path.read_bytes()), three())


def test_gif_is_read_from_its_first_frame() -> None:
    path = next(FIXTURES.glob("variants/test0300_digit3_two_frames.gif"))
    second_frame = Image.open(path)
    second_frame.seek(1)
    assert correlation(np.asarray(second_frame.convert("L")), three()) < 0.2
    assert_same_digit(to_model_input(path.read_bytes()), three())


def test_phone_multi_picture_jpeg_is_read_from_its_first_picture() -> None:
    upright = Image.fromarray(255 - three()).resize((140, 140)).convert("RGB")
    data = encoded(upright, "MPO", save_all=True, append_images=[Image.new("RGB", (140, 140))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert_same_digit(to_model_input(data), three())


# --- colour modes ----------------------------------------------------------------------------


def as_mode(digit: np.ndarray, mode: str) -> Image.Image:
    """The light-on-dark digit stored in ``mode`` with that mode's own value range."""
    image = Image.fromarray(digit)
    if mode == "I;16":
        return Image.fromarray(digit.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(digit.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(digit.astype(np.float32) / 255.0)
    if mode == "1":
        return image.point(lambda value: 255 if value > 127 else 0).convert(
            "1", dither=Image.Dither.NONE
        )
    if mode in ("LA", "RGBA", "PA"):
        return image.convert(mode[:-1]).convert(mode)  # alpha fully opaque: not transparency
    return image.convert(mode)


@pytest.mark.parametrize(
    ("mode", "image_format"),
    [
        ("L", "TIFF"),
        ("1", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("PA", "TIFF"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "TIFF"),
        ("YCbCr", "TIFF"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
    ],
)
def test_every_mode_gives_the_same_digit(mode: str, image_format: str) -> None:
    data = encoded(as_mode(three(), mode), image_format)
    assert Image.open(io.BytesIO(data)).mode == mode
    output = to_model_input(data)
    assert_mnist_like(output)
    assert shift_tolerant_correlation(output, three()) > 0.9


@pytest.mark.parametrize("mode", ["LAB", "La", "RGBa", "HSV"])
def test_in_memory_modes_without_a_file_format_are_handled(mode: str) -> None:
    image = Image.fromarray(three()).convert("RGB").convert(mode)
    output = mnist_normalise(to_grayscale_ink(image))
    assert shift_tolerant_correlation(output, three()) > 0.9


@pytest.mark.parametrize(
    ("mode", "background", "ink"), [("I;16", 20_000, 60_000), ("I", 30_000, 65_000)]
)
def test_16_bit_values_are_scaled_not_clipped(mode: str, background: int, ink: int) -> None:
    """Clipping at 255 would leave one flat colour; scaling keeps the digit."""
    levels = background + three().astype(np.int64) * (ink - background) // 255
    dtype = np.uint16 if mode == "I;16" else np.int32
    data = encoded(Image.fromarray(levels.astype(dtype)), "PNG" if mode == "I;16" else "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    ink = to_grayscale_ink(Image.open(io.BytesIO(data)))
    assert ink.min() == 0.0 and 0.3 < ink.max() <= 1.0
    assert shift_tolerant_correlation(to_model_input(data), three()) > 0.9


def test_16_bit_png_transparency_is_alpha() -> None:
    background = 40_000
    levels = np.where(three() > 0, background - three().astype(np.int64) * 150, background)
    data = encoded(Image.fromarray(levels.astype(np.uint16)), "PNG", transparency=background)
    assert Image.open(io.BytesIO(data)).info["transparency"] == background
    assert shift_tolerant_correlation(to_model_input(data), three()) > 0.9


# --- transparency: the alpha channel is the ink ----------------------------------------------


@pytest.mark.parametrize(
    ("stroke", "hidden_colour"),
    [
        ((0, 0, 0), (0, 0, 0)),
        ((0, 0, 0), (255, 255, 255)),
        ((255, 255, 255), (0, 0, 0)),
        ((200, 30, 30), (0, 0, 0)),
        ((20, 20, 120), (255, 255, 255)),
    ],
)
def test_canvas_strokes_are_ink_whatever_their_colour(
    stroke: tuple[int, int, int], hidden_colour: tuple[int, int, int]
) -> None:
    """Canvas apps store any colour under alpha 0; only the alpha-weighted strokes count."""
    alpha = np.asarray(Image.fromarray(three()).resize((280, 280), Image.Resampling.BICUBIC))
    rgba = np.empty((280, 280, 4), dtype=np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, stroke, hidden_colour)
    rgba[..., 3] = alpha
    assert_same_digit(to_model_input(encoded(Image.fromarray(rgba))), three())


def test_fully_opaque_alpha_is_no_transparency() -> None:
    dark_on_white = Image.fromarray(255 - three())
    rgb = to_model_input(encoded(dark_on_white.convert("RGB")))
    rgba = to_model_input(encoded(dark_on_white.convert("RGBA")))
    np.testing.assert_array_equal(rgba, rgb)


# --- polarity and background -----------------------------------------------------------------


def test_dark_on_light_and_light_on_dark_give_the_same_digit() -> None:
    light_on_dark = to_model_input(encoded(Image.fromarray(three()).convert("RGB")))
    dark_on_light = to_model_input(encoded(Image.fromarray(255 - three()).convert("RGB")))
    assert correlation(light_on_dark, dark_on_light) > 0.99
    assert int(light_on_dark.max()) == int(dark_on_light.max()) == 255  # stretched to full contrast
    assert_same_digit(dark_on_light, three())


@pytest.mark.parametrize("shadow", [0, 60, 120])
def test_shadowed_grainy_paper_photo_is_read(shadow: float) -> None:
    """A corner in deep shadow decides neither the polarity nor what is ink."""
    data = page_photo(np.random.default_rng(shadow), three(), shadow=shadow, noise=4.0)
    image = decode_image(data)
    ink = to_grayscale_ink(image)
    outside = np.ones(ink.shape, dtype=bool)
    outside[90:410, 90:410] = False
    assert np.count_nonzero(ink[outside]) < 0.001 * outside.sum()
    assert_same_digit(to_model_input(data), three())


def test_anti_aliased_edges_keep_grey_levels() -> None:
    canvas = next(FIXTURES.glob("variants/test0300_digit3_canvas_rgba.png"))
    output = to_model_input(canvas.read_bytes())
    greys = np.count_nonzero((output > 0) & (output < 255))
    assert greys > 0.3 * np.count_nonzero(output)


# --- geometry --------------------------------------------------------------------------------


def test_aspect_ratio_is_kept() -> None:
    tall = np.zeros((300, 300), dtype=np.uint8)
    tall[50:250, 140:160] = 255  # 200 x 20: a "1"
    output = to_model_input(encoded(Image.fromarray(tall)))
    assert ink_box(output) == (20, 2)
    assert_mnist_like(output)


def test_size_parameter_generalises_the_28_pixel_field() -> None:
    output = to_model_input(encoded(Image.fromarray(255 - three()).convert("RGB")), size=56)
    assert_mnist_like(output, size=56)
    assert max(ink_box(output)) == 40


@pytest.mark.parametrize("side", [16, 24, 32])
@pytest.mark.parametrize("path", DIGITS, ids=lambda p: p.name)
def test_tightly_cropped_small_digit_is_not_blank(path: Path, side: int) -> None:
    """A digit cropped to its ink and squeezed into a small square (as in USPS-style datasets)
    has ink nearly everywhere: its stroke edges must not pass for noise that hides it."""
    digit = pixels_of(path)
    rows, columns = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    tight = Image.fromarray(digit[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1])
    output = to_model_input(encoded(tight.resize((side, side), Image.Resampling.BILINEAR)))
    assert output.shape == (SIZE, SIZE)
    assert int(output.max()) == 255
    assert max(ink_box(output)) <= BOX
    row_com, column_com = centre_of_mass(output)
    assert abs(row_com - SIZE / 2) <= 1.0 and abs(column_com - SIZE / 2) <= 1.0


def test_large_photo_is_downscaled_with_antialiasing() -> None:
    """A one-pixel diagonal in a 2000x2000 picture: point sampling would break it into dots."""
    canvas = Image.new("L", (2000, 2000), 255)
    ImageDraw.Draw(canvas).line([(100, 100), (1900, 1900)], fill=0, width=1)
    output = to_model_input(encoded(canvas))
    assert ink_box(output) == (20, 20)
    assert (output > 0).any(axis=1).sum() == 20  # every row of the box has ink: no gaps


# --- errors: status and a message that says what is expected ---------------------------------


def truncated(path_pattern: str) -> bytes:
    data = next(FIXTURES.glob(path_pattern)).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(np.random.default_rng(0).bytes(5000), id="random"),
        pytest.param(b"the digit is a three, honestly\n" * 20, id="text"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n", id="eps"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(truncated("variants/test0300_digit3_canvas_rgba.png"), id="truncated-png"),
        pytest.param(truncated("variants/test0300_digit3_paper_page.jpg"), id="truncated-jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="png-signature-only"),
    ],
)
def test_unreadable_uploads_are_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError) as caught:
        to_model_input(data)
    assert caught.value.status == 400
    assert isinstance(caught.value, ImageError) and isinstance(caught.value, ValueError)
    assert "expected a PNG, JPEG" in str(caught.value)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A valid 20000x20000 one-bit PNG of a few tens of kB: 400 million pixels once decoded."""
    side = 20_000
    row = b"\0" * (1 + side // 8)  # filter byte + one bit per pixel
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000))
    pixels += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def refuse_to_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_decompression_bomb_is_refused_from_its_header(
    bomb_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(bomb_png) < 200_000
    refuse_to_decode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        to_model_input(bomb_png)
    assert caught.value.status == 413
    assert "400,000,000 pixels" in str(caught.value)
    assert "40,000,000" in str(caught.value)


def test_pixel_limit_does_not_rely_on_pillows_global(
    bomb_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    refuse_to_decode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(bomb_png)
    assert "20000x20000" in str(caught.value)
    assert caught.value.status == 413


def test_max_pixels_is_the_callers_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = next(FIXTURES.glob("variants/test0300_digit3_jpeg_black_on_white.jpg")).read_bytes()
    refuse_to_decode(monkeypatch)
    with pytest.raises(ImageTooLargeError) as caught:
        to_model_input(data, max_pixels=10_000)
    message = str(caught.value)
    assert "140x140" in message and "19,600" in message and "10,000" in message


def test_pillows_bomb_warning_raised_as_error_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = next(FIXTURES.glob("variants/test0300_digit3_jpeg_black_on_white.jpg")).read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15_000)  # 19,600 pixels: a warning, not error
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError) as caught:
            to_model_input(data)
    assert "19,600 pixels" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encoded(Image.new("L", (100, 100), 255)), id="white"),
        pytest.param(encoded(Image.new("L", (28, 28), 0)), id="black-28x28"),
        pytest.param(encoded(Image.new("RGB", (64, 48), (90, 140, 200)), "JPEG"), id="blue"),
        pytest.param(encoded(Image.new("RGBA", (280, 280), (0, 0, 0, 0))), id="transparent"),
        pytest.param(encoded(Image.new("RGBA", (280, 280), (255, 0, 0, 0))), id="transparent-red"),
        pytest.param(
            page_photo(np.random.default_rng(1), None, shadow=60, noise=6.0), id="blank-paper"
        ),
    ],
)
def test_blank_images_have_no_ink(data: bytes) -> None:
    with pytest.raises(NoInkError) as caught:
        to_model_input(data)
    assert caught.value.status == 422
    assert "blank" in str(caught.value) and "expected a handwritten digit" in str(caught.value)


# --- property: no input bytes escape as anything but ImageError ------------------------------


def random_image(rng: np.random.Generator) -> bytes:
    """A random picture (noise, flat, or strokes) of random size in a random mode and format."""
    height, width = (int(side) for side in rng.integers(1, 160, size=2))
    content = rng.choice(["noise", "flat", "strokes"])
    if content == "noise":
        grey = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif content == "flat":
        grey = np.full((height, width), rng.integers(0, 256), dtype=np.uint8)
    else:
        canvas = Image.new("L", (width, height), int(rng.integers(0, 256)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 5))):
            points = [tuple(int(v) for v in rng.integers(0, max(width, height), 2)) for _ in "ab"]
            draw.line(points, fill=int(rng.integers(0, 256)), width=int(rng.integers(1, 8)))
        grey = np.asarray(canvas)
    mode, formats = [
        ("L", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]),
        ("RGB", ["PNG", "JPEG", "BMP", "WEBP", "TIFF"]),
        ("RGBA", ["PNG", "WEBP", "TIFF"]),
        ("LA", ["PNG", "TIFF"]),
        ("P", ["PNG", "GIF", "TIFF"]),
        ("1", ["PNG", "BMP", "TIFF"]),
        ("CMYK", ["JPEG", "TIFF"]),
        ("I;16", ["PNG", "TIFF"]),
        ("I", ["TIFF"]),
        ("F", ["TIFF"]),
    ][int(rng.integers(0, 10))]
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * int(rng.integers(1, 258)))
    elif mode == "I":
        image = Image.fromarray(grey.astype(np.int32) * int(rng.integers(-300, 300)))
    elif mode == "F":
        image = Image.fromarray(grey.astype(np.float32) * float(rng.normal(0, 100)))
    elif mode in ("RGBA", "LA"):
        image = Image.fromarray(grey).convert(mode)
        image.putalpha(Image.fromarray(rng.permutation(grey, axis=1)))
    else:
        image = Image.fromarray(grey).convert(mode)
    return encoded(image, str(rng.choice(formats)))


def damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """The file cut short, or with a few bytes overwritten (often deep in the headers)."""
    if rng.random() < 0.5:
        return data[: int(rng.integers(0, len(data)))]
    corrupted = bytearray(data)
    for position in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
        corrupted[position] = int(rng.integers(0, 256))
    return bytes(corrupted)


def assert_image_error_or_digit(data: bytes) -> None:
    try:
        output = to_model_input(data)
    except ImageError as error:
        assert error.status in (400, 413, 422)
        assert str(error)
        return
    assert output.dtype == np.uint8 and output.shape == (SIZE, SIZE)


# Hostile bytes make Pillow warn (corrupt EXIF, a header over its own pixel limit) on the way to
# the ImageError; the warnings are expected here.
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
def test_any_bytes_give_a_digit_or_an_image_error() -> None:
    rng = np.random.default_rng(2024)
    valid = [path.read_bytes() for path in VARIANTS]
    for _ in range(150):
        assert_image_error_or_digit(rng.bytes(int(rng.integers(0, 2000))))
    for _ in range(300):
        data = random_image(rng)
        assert_image_error_or_digit(data)
        assert_image_error_or_digit(damaged(data, rng))
    for _ in range(300):
        assert_image_error_or_digit(damaged(valid[int(rng.integers(0, len(valid)))], rng))
