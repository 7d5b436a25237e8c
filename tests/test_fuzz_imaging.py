"""Fuzzing the decoder and the digit preprocessing: any bytes give a digit or an ImageError.

The contract the service relies on: ``to_model_input`` returns a uint8 [28, 28] array with some
ink in it, or raises an ``ImageError`` whose status is a 4xx and whose message is the client's
answer; it never raises anything else (a 500), never hangs, and never computes with NaN or
overflowing numbers (a numpy RuntimeWarning from the pipeline would mean a garbage digit).

Inputs: random bytes; valid images of every mode in every format the service accepts, with
random content and odd sizes (1x1, 1xN, extreme aspect ratios); the same encodings truncated
and bit-flipped; headers declaring huge sizes; random arrays straight into the array stages.
Runs are deterministic (derandomize); DLOPS_FUZZ_EXAMPLES=5000 raises the budget of every test
for a long local run.
"""

from __future__ import annotations

import faulthandler
import io
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw, ImageFile

from bench import hostile_inputs as hostile
from dlops.pipeline.decode import DEFAULT_MAX_PIXELS, ImageError, ImageRefusedError, decode_image
from dlops.pipeline.preprocess import digit as imaging
from dlops.pipeline.preprocess.digit import (
    mnist_normalise,
    to_mnist_digit,
    to_model_input,
)

SIZE = 28
# A hang is reported by dumping every thread's stack and ending the run: a decoder stuck in C
# cannot be interrupted any other way. Far above the slowest legitimate case (a 40 MP photo
# takes a few seconds on a busy machine), so it never fires on a slow run.
HANG_SECONDS = 120
EXAMPLES_OVERRIDE = int(os.environ.get("DLOPS_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int) -> settings:
    """Deterministic, bounded settings for CI; DLOPS_FUZZ_EXAMPLES overrides the count."""
    return settings(
        max_examples=EXAMPLES_OVERRIDE or examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextmanager
def pipeline_guard() -> Iterator[None]:
    """Fail on a hang, and on numpy's warnings about NaN, overflow or division by zero."""
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        faulthandler.cancel_dump_traceback_later()
    numeric = [
        f"{warning.category.__name__}: {warning.message} (line {warning.lineno})"
        for warning in caught
        if issubclass(warning.category, RuntimeWarning)
        and Path(warning.filename) == Path(imaging.__file__)
    ]
    assert not numeric, f"the pipeline computed with invalid numbers: {numeric}"


def assert_digit_or_image_error(run: Callable[[], np.ndarray]) -> np.ndarray | ImageError:
    """Run a pipeline stage; its answer is a 28x28 uint8 digit or an ImageError, nothing else."""
    with pipeline_guard():
        try:
            pixels = run()
        except ImageError as error:
            assert 400 <= error.status < 500, f"{type(error).__name__} has status {error.status}"
            # The message is the client's answer: what was wrong, and what to send instead.
            assert re.search(r"\b(expected|send)\b", str(error), re.IGNORECASE), str(error)
            return error
    assert isinstance(pixels, np.ndarray), type(pixels)
    assert pixels.dtype == np.uint8, pixels.dtype
    assert pixels.shape == (SIZE, SIZE), pixels.shape
    assert pixels.any(), "a blank digit came back instead of a NoInkError"
    return pixels


# --- valid images --------------------------------------------------------------------------------

# Every mode Pillow opens images in, or that a caller may hand to the array stages.
ALL_MODES = (
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
    "HSV", "I", "I;16", "I;16B", "I;16L", "I;16N", "F",
)  # fmt: skip
# The modes each accepted format saves (Pillow 13): what real uploads of that format decode to.
ENCODABLE_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"),
    "JPEG": ("L", "RGB", "RGBX", "CMYK", "YCbCr"),
    "GIF": ("L", "P", "RGB"),
    "BMP": ("1", "L", "P", "RGB", "RGBA"),
    "WEBP": ("L", "RGB", "RGBA"),
    "TIFF": (
        "1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "I;16",
        "I;16B", "F",
    ),
}  # fmt: skip
TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits")
# Fax compression for scans of black and white pages, JPEG inside TIFF for photos.
MODE_TIFF_COMPRESSIONS = {
    "1": ("group3", "group4"),
    "L": ("jpeg",),
    "RGB": ("jpeg",),
    "YCbCr": ("jpeg",),
}
HIGH_DEPTH_DTYPES = {
    "I;16": "<u2",
    "I;16B": ">u2",
    "I;16L": "<u2",
    "I;16N": "=u2",
    "I": "=i4",
    "F": "=f4",
}
CONTENTS = ("strokes", "strokes_on_noise", "dot", "blank", "noise", "canvas")
# Where a high-depth image's values lie: the usual nominal ranges, and ranges no format implies.
HIGH_DEPTH_RANGES = ((0.0, 1.0), (0.0, 255.0), (0.0, 65535.0), (-1e6, 1e6), (-3e38, 3e38))

sides = st.one_of(st.integers(1, 8), st.integers(1, 64), st.integers(1, 600))
long_sides = st.integers(100, 12_000)
image_sizes = st.one_of(
    st.tuples(sides, sides),
    st.tuples(st.integers(1, 3), long_sides),  # one to three pixels wide, thousands tall
    st.tuples(long_sides, st.integers(1, 3)),
)


def _strokes(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A few random lines on a zero background: something like handwriting, 0..1."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    width, height = size
    for _ in range(int(rng.integers(1, 5))):
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(3)]
        draw.line(
            points, fill=int(rng.integers(1, 256)), width=int(rng.integers(1, max(2, width // 4)))
        )
    return np.asarray(canvas, dtype=np.float32) / 255.0


def image_content(
    kind: str, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Lightness in 0..1 ([height, width]) and, for drawings on a canvas, an alpha channel."""
    width, height = size
    shape = (height, width)
    background, ink = rng.uniform(0, 1, size=2)
    if kind == "blank":
        return np.full(shape, background, dtype=np.float32), None
    if kind == "noise":
        return rng.uniform(0, 1, size=shape).astype(np.float32), None
    if kind == "dot":
        values = np.full(shape, background, dtype=np.float32)
        values[rng.integers(height), rng.integers(width)] = ink
        return values, None
    mask = _strokes(size, rng)
    if kind == "canvas":
        colour = np.full(shape, ink, dtype=np.float32)
        return colour, mask
    values = background + (ink - background) * mask
    if kind == "strokes_on_noise":
        values = values + rng.normal(0, rng.uniform(0, 0.2), size=shape)
    return np.clip(values, 0, 1).astype(np.float32), None


def image_of_mode(
    mode: str, lightness: np.ndarray, alpha: np.ndarray | None, rng: np.random.Generator
) -> Image.Image:
    """Pillow image of ``mode`` showing ``lightness`` (and ``alpha``, where the mode has one)."""
    height, width = lightness.shape
    if mode in HIGH_DEPTH_DTYPES:
        low, high = HIGH_DEPTH_RANGES[int(rng.integers(len(HIGH_DEPTH_RANGES)))]
        dtype = np.dtype(HIGH_DEPTH_DTYPES[mode])
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            low, high = max(low, info.min), min(high, info.max)
        values = (low + lightness.astype(np.float64) * (high - low)).astype(dtype)
        return Image.frombytes(mode, (width, height), values.tobytes())
    grey = Image.fromarray(np.rint(lightness * 255).astype(np.uint8))
    if alpha is None:
        source = grey
    else:
        source = Image.merge("LA", (grey, Image.fromarray(np.rint(alpha * 255).astype(np.uint8))))
    if mode in ("La", "RGBa"):  # Pillow reaches the premultiplied modes only from RGBA
        source = source.convert("RGBA")
    return source.convert(mode)


def random_bytes_image(mode: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Every byte of the pixel data random: all values, NaN and infinities for mode F."""
    length = len(Image.new(mode, (size[0], 1)).tobytes()) * size[1]
    return Image.frombytes(mode, size, rng.integers(0, 256, length, dtype=np.uint8).tobytes())


@st.composite
def images(draw: st.DrawFn, modes: tuple[str, ...] = ALL_MODES) -> Image.Image:
    mode = draw(st.sampled_from(modes))
    size = draw(image_sizes)
    kind = draw(st.sampled_from((*CONTENTS, "random_bytes")))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random_bytes":
        return random_bytes_image(mode, size, rng)
    lightness, alpha = image_content(kind, size, rng)
    return image_of_mode(mode, lightness, alpha, rng)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


@st.composite
def save_options(draw: st.DrawFn, image: Image.Image, image_format: str) -> dict[str, object]:
    """Random encoder settings of ``image_format``: the variety real clients produce."""
    options: dict[str, object] = {}
    if draw(st.booleans()) and image.mode in ("L", "P", "RGB", "I;16") and image_format == "PNG":
        # A transparent colour (tRNS) rather than an alpha channel.
        options["transparency"] = image.getpixel((0, 0))
    if image_format == "JPEG":
        options["quality"] = draw(st.integers(1, 100))
        options["progressive"] = draw(st.booleans())
        if image.mode in ("RGB", "YCbCr", "RGBX"):
            options["subsampling"] = draw(st.sampled_from((0, 1, 2)))
    if image_format == "WEBP":
        options["lossless"] = draw(st.booleans())
        options["quality"] = draw(st.integers(0, 100))
    if image_format == "TIFF":
        compression = draw(
            st.sampled_from(TIFF_COMPRESSIONS + MODE_TIFF_COMPRESSIONS.get(image.mode, ()))
        )
        if compression != "raw":
            options["compression"] = compression
    if image_format in ("GIF", "WEBP", "TIFF", "PNG") and draw(st.booleans()):
        # An animation or a multi-page file: the service reads the first frame.
        options["save_all"] = True
        options["append_images"] = [image.transpose(Image.Transpose.ROTATE_180)]
    if image_format == "GIF" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    if image_format in ("JPEG", "WEBP", "PNG", "TIFF") and draw(st.booleans()):
        # A camera's orientation tag (1..8), or a value no camera writes (libtiff refuses those).
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8) if image_format == "TIFF" else st.integers(0, 9))
        options["exif"] = exif
    return options


@st.composite
def encoded_images(draw: st.DrawFn, max_pixels: int | None = None) -> bytes:
    """A valid upload: an image of a random mode, size and content, in an accepted format."""
    image_format = draw(st.sampled_from(sorted(ENCODABLE_MODES)))
    image = draw(images(modes=ENCODABLE_MODES[image_format]))
    if max_pixels is not None and image.width * image.height > max_pixels:
        image = image.crop((0, 0, min(image.width, 64), min(image.height, 64)))
    options = draw(save_options(image, image_format))
    try:
        return encode(image, image_format, **options)
    except OSError:
        # Pillow sizes its progressive JPEG buffer by the pixel count, which noise in a thin or
        # CMYK image outgrows ("Suspension not allowed here"): such a file cannot be made here.
        assume(not options.get("progressive"))
        raise


# --- damaged and hostile encodings ---------------------------------------------------------------

# Random bytes behind each accepted format's signature reach the format's parser, not just the
# "not an image" answer.
SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"RIFF\x00\x00\x00\x00WEBPVP8X",
    b"II*\x00",
    b"MM\x00*",
)
random_uploads = st.one_of(
    st.binary(max_size=4096),
    st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=4096)).map(b"".join),
)


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, bit-flipped, overwritten, or with bytes inserted or removed."""
    damaged_data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(("truncate", "flip", "overwrite", "insert", "delete")))
        position = draw(st.integers(0, max(len(damaged_data) - 1, 0)))
        if operation == "truncate":
            del damaged_data[position:]
        elif operation == "flip" and damaged_data:
            damaged_data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            damaged_data[position : position + len(patch)] = patch
        elif operation == "insert":
            damaged_data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del damaged_data[position : position + draw(st.integers(1, 16))]
    return bytes(damaged_data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def declare_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a valid CRC) declares width x height; the pixel data is unchanged."""
    ihdr_payload = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", ihdr_payload) + data[33:]


def declare_gif_size(data: bytes, width: int, height: int) -> bytes:
    """The logical screen and the first frame's descriptor both declare width x height."""
    patched = bytearray(data)
    patched[6:10] = struct.pack("<HH", width, height)
    descriptor = patched.find(b"\x2c", 13)
    if descriptor != -1 and descriptor + 9 <= len(patched):
        patched[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(patched)


def declare_bmp_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def declare_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The first start-of-frame marker (SOF0..SOF3) declares width x height."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3"):
        start = data.find(marker)
        if start != -1:
            # marker, length (2), precision (1), height (2), width (2)
            return data[: start + 5] + struct.pack(">HH", height, width) + data[start + 9 :]
    return data


def declare_tiff_size(data: bytes, width: int, height: int) -> bytes:
    """The first IFD's ImageWidth and ImageLength tags declare width x height."""
    order = "<" if data[:2] == b"II" else ">"
    patched = bytearray(data)
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (entries,) = struct.unpack_from(order + "H", data, ifd)
    for index in range(entries):
        entry = ifd + 2 + 12 * index
        tag, field_type = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            if field_type == 3:  # SHORT
                struct.pack_into(order + "HH", patched, entry + 8, min(value, 0xFFFF), 0)
            else:
                struct.pack_into(order + "I", patched, entry + 8, value)
    return bytes(patched)


def declare_webp_size(data: bytes, width: int, height: int) -> bytes:
    """The canvas (VP8X), the lossy frame (VP8) or the lossless header (VP8L) declares the size."""
    patched = bytearray(data)
    chunk = bytes(data[12:16])
    if chunk == b"VP8X":
        patched[24:27] = (width - 1).to_bytes(3, "little")
        patched[27:30] = (height - 1).to_bytes(3, "little")
    elif chunk == b"VP8 ":
        struct.pack_into("<HH", patched, 26, width & 0x3FFF, height & 0x3FFF)
    elif chunk == b"VP8L":
        packed = ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
        packed |= struct.unpack_from("<I", data, 21)[0] & ~0x0FFFFFFF
        struct.pack_into("<I", patched, 21, packed)
    return bytes(patched)


# format -> (how to declare a size, the largest side the header can hold)
SIZE_DECLARATIONS: dict[str, tuple[Callable[[bytes, int, int], bytes], int]] = {
    "PNG": (declare_png_size, 2**31 - 1),
    "GIF": (declare_gif_size, 0xFFFF),
    "BMP": (declare_bmp_size, 2**31 - 1),
    "JPEG": (declare_jpeg_size, 0xFFFF),
    "TIFF": (declare_tiff_size, 2**32 - 1),
    "WEBP": (declare_webp_size, 2**14),
}


@st.composite
def huge_declarations(draw: st.DrawFn) -> tuple[bytes, int]:
    """A small valid image whose header declares a random, mostly huge, size; and that size."""
    image_format = draw(st.sampled_from(sorted(SIZE_DECLARATIONS)))
    declare, largest_side = SIZE_DECLARATIONS[image_format]
    mode = draw(st.sampled_from(ENCODABLE_MODES[image_format]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    small = image_of_mode(mode, *image_content("strokes", (16, 16), rng), rng)
    width = draw(st.integers(1, largest_side))
    height = draw(st.integers(1, largest_side))
    if image_format == "WEBP" and encode(small, "WEBP")[12:16] == b"VP8X":
        width, height = min(width, 2**24), min(height, 2**24)
    return declare(encode(small, image_format), width, height), width * height


# --- the properties ------------------------------------------------------------------------------


@fuzz_settings(300)
@given(data=random_uploads)
@example(data=b"")
@example(data=b"\x89PNG\r\n\x1a\n")
def test_random_bytes_are_refused_with_an_image_error(data: bytes) -> None:
    result = assert_digit_or_image_error(lambda: to_model_input(data))
    assert isinstance(result, ImageError), "random bytes were classified as a digit"


@fuzz_settings(120)
@given(data=encoded_images())
def test_valid_images_of_every_mode_size_and_format(data: bytes) -> None:
    assert_digit_or_image_error(lambda: to_model_input(data))


@fuzz_settings(200)
@given(data=encoded_images(max_pixels=4096).flatmap(damaged))
def test_truncated_and_bit_flipped_encodings(data: bytes) -> None:
    assert_digit_or_image_error(lambda: to_model_input(data))


@fuzz_settings(100)
@given(declared=huge_declarations())
def test_images_declaring_huge_sizes(declared: tuple[bytes, int]) -> None:
    data, declared_pixels = declared
    result = assert_digit_or_image_error(lambda: to_model_input(data))
    if declared_pixels > DEFAULT_MAX_PIXELS:
        # Decoding past the limit would mean a decompression bomb got through.
        assert isinstance(result, ImageError), f"{declared_pixels:,} pixels were decoded"


@fuzz_settings(120)
@given(data=encoded_images(), factor=st.integers(2, 5))
def test_reduced_decoding_of_every_mode_size_and_format(data: bytes, factor: int) -> None:
    """The core decodes large pictures reduced (palette, 1-bit and 16-bit images converted
    first): every mode still gives a digit or an ImageError."""
    assert_digit_or_image_error(
        lambda: to_mnist_digit(decode_image(data, reduction=lambda width, height: factor))
    )


@st.composite
def structural_bombs(draw: st.DrawFn) -> bytes:
    """Few bytes whose structure multiplies the decoder's work: absurd shapes, megabytes of PNG
    text, progressive JPEGs of hundreds of scans (bench/hostile_inputs.py)."""
    kind = draw(st.sampled_from(["strip", "text", "scans"]))
    if kind == "strip":
        short, ratio = draw(st.integers(1, 4)), draw(st.integers(101, 100_000))
        width, height = (short, short * ratio) if draw(st.booleans()) else (short * ratio, short)
        return hostile.bitonal_png(width, height)
    if kind == "text":
        return hostile.text_bomb_png(draw(st.integers(2, 6)), draw(st.integers(600_000, 10**6)))
    side = st.integers(8, 256)
    return hostile.many_scans_jpeg(draw(side), draw(side), draw(st.integers(101, 400)))


@fuzz_settings(60)
@given(data=structural_bombs())
def test_structural_bombs_are_refused_before_any_pixel_is_decoded(data: bytes) -> None:
    with patch.object(ImageFile.ImageFile, "load", side_effect=AssertionError("decoded")):
        result = assert_digit_or_image_error(lambda: to_model_input(data))
    assert isinstance(result, ImageRefusedError), result


@fuzz_settings(120)
@given(image=images())
def test_array_stages_on_images_of_every_mode(image: Image.Image) -> None:
    """The stages after decoding, on modes no accepted format produces too (La, RGBa, HSV...)."""
    assert_digit_or_image_error(lambda: to_mnist_digit(image))


def float_tiff_spanning_float32() -> bytes:
    """A bright bar on a dark field, in a float TIFF whose pixels span all of float32's range."""
    values = np.full((30, 30), -3e38, dtype=np.float32)
    values[8:22, 13:17] = 3e38
    return encode(Image.frombytes("F", (30, 30), values.tobytes()), "TIFF")


def test_float_tiff_spanning_the_whole_float32_range() -> None:
    """Found by fuzzing: the span overflowed to infinity and NaN reached np.bincount (a 500)."""
    data = float_tiff_spanning_float32()
    digit = assert_digit_or_image_error(lambda: to_model_input(data))
    assert isinstance(digit, np.ndarray), f"a bright bar was refused: {digit}"


ink_maps = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=80),
    elements={"allow_nan": True, "allow_infinity": True},
)


@fuzz_settings(200)
@given(ink=ink_maps)
# Found by this test: a sum over the digit overflowed float32 (NaN centre of mass: ValueError).
@example(ink=np.array([[1.7014116e37]], dtype=np.float32))
# Found by this test: strokes at both ends of negative "ink" averaged to nothing when shrunk into
# the box (ZeroDivisionError in the centre of mass).
@example(ink=np.array([[1.0] + [-1.0] * 38 + [1.0]], dtype=np.float32))
# Found by this test: float64 beyond float32's range overflowed in the cast (RuntimeWarning).
@example(ink=np.array([[1e300, 0.5]]))
def test_mnist_normalise_on_random_arrays(ink: np.ndarray) -> None:
    assert_digit_or_image_error(lambda: mnist_normalise(ink))
