"""Upload bytes to a decoded, upright ``PIL.Image``: the one place that opens untrusted images.

Decoding is split so that its cost is known before it is paid: :func:`open_image` reads only the
header and refuses, from it and a cheap scan, what cannot be decoded within the limits (pixel
count, aspect ratio, progressive JPEG scans, PNG text); :func:`planned` then says, for what the
preprocessing needs, how far the picture may shrink and how much memory decoding and
preprocessing it will take (a :class:`Decoding`), and its ``decode()`` decodes no more pixels
than that (a JPEG at 1/2 to 1/8 scale for free, other formats reduced before any float array
exists). The request core makes these two calls: the header, then the plan it runs within its
memory budget.

Phone photos: HEIC/HEIF (pillow-heif's libheif, registered here) and AVIF (Pillow's own libavif).
Neither codec decodes at a reduced scale, so they are decoded whole and reduced like PNG. Their
decoders allocate from numbers inside the file that need not match the size Pillow reports (the AV1
or HEVC stream's own size, bit depth and chroma, a grid's canvas, an alpha plane's size), so
:func:`open_image` reads those from the container and the streams' headers
(:func:`dlops.pipeline.phone_formats.coded_layout`) and both the pixel limit and :func:`decode_cost`
go by them.

Every failure caused by the upload raises an ``ImageError`` subclass whose ``status`` is the HTTP
status to answer with and whose message says what was wrong and what is expected. No serving
framework here, so it is tested on its own.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pillow_heif
from PIL import AvifImagePlugin, ExifTags, Image, PngImagePlugin

from dlops.pipeline.phone_formats import (
    PHONE_DECODE_THREADS,
    CodedLayout,
    MalformedFile,
    UnsupportedStructure,
    coded_layout,
    is_phone_container,
    largest_declared,
)

DEFAULT_MAX_PIXELS = 40_000_000
# EPS and friends are left out on purpose: Pillow hands them to Ghostscript, which has no business
# running on untrusted uploads. MPO (multi-picture JPEG from phones) is opened by the JPEG plugin.
# AVIF comes before HEIF: both accept the generic 'mif1' brand, and pillow-heif's libheif, built
# without an AV1 decoder, would take an AVIF so branded and fail to decode it; Pillow's AVIF
# plugin passes a HEIC on to the next.
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "HEIF")
EXPECTED_UPLOAD = "expected a PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC/HEIF or AVIF image"
PHONE_FORMATS = ("HEIF", "AVIF")
CODED_LAYOUT_KEY = "dlops.coded_layout"  # image.info key: open_image's CodedLayout
# Per decode: libheif's and libde265's contexts, dav1d's per-thread state (~0.5 MiB each), and
# the alignment of small planes (a 28x28 picture measured 1-2 MiB with 4 threads).
PHONE_DECODER_OVERHEAD = 8 * 1024 * 1024
# pillow-heif's opener for HEIF only (Pillow reads AVIF itself). Embedded thumbnails, depth maps
# and auxiliary images are never read: only the primary picture (and its alpha plane) is decoded,
# which is what decode_cost bounds; a thumbnail can also disagree with an edited picture. libheif
# applies the 'irot'/'imir'/'clap' transforms while decoding and pillow-heif then resets the EXIF
# orientation to 1, so load_reduced's EXIF transpose does not turn a HEIC twice. Pillow's AVIF
# plugin instead leaves the pixels as stored and writes irot/imir into the EXIF orientation.
pillow_heif.register_heif_opener(
    thumbnails=False,
    depth_images=False,
    aux_images=False,
    decode_threads=PHONE_DECODE_THREADS,
)
AvifImagePlugin.DEFAULT_MAX_THREADS = PHONE_DECODE_THREADS
EXIF_INFO_KEYS = {"exif", "Raw profile type exif"}
# PNG text chunks (tEXt, zTXt, iTXt) are metadata the model never sees; Pillow decompresses them
# while it reads the header, up to 64 MiB by default. One MiB in all is more than any real image
# carries (an ICC profile, which Pillow limits per chunk, is not text).
MAX_PNG_TEXT_BYTES = 1024 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = MAX_PNG_TEXT_BYTES
# Start-of-scan markers: a baseline JPEG has one per colour component at most, a progressive one
# about ten. Each scan passes over every coefficient of the image, so hundreds of them make a
# small file cost seconds; libjpeg-turbo's own tools refuse more than a few hundred.
JPEG_START_OF_SCAN = b"\xff\xda"
# Bytes per pixel of Pillow's storage: one for 1-bit, grey and palette images, four for the rest
# (RGB is stored as RGBX); 16-bit and float modes take two or four.
ONE_BYTE_MODES = ("1", "L", "P")
# libjpeg keeps the whole image's DCT coefficients (2 bytes each, every component) while it
# decodes a progressive JPEG, whatever the output scale.
COEFFICIENT_BYTES = 2
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodeLimits:
    """What an upload may declare before it is refused, without decoding it."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    # Longer side over shorter side: panoramas and long receipts stay far below this, a strip of
    # one pixel by millions (a way to pass a pixel limit with an absurd shape) does not.
    max_aspect_ratio: int = 100
    max_jpeg_scans: int = 100


DEFAULT_LIMITS = DecodeLimits()


class ImageError(ValueError):
    """The upload cannot be turned into the model's input; ``status`` is the HTTP status."""

    status: int = 400


class NotAnImageError(ImageError):
    """Empty, truncated, damaged, or not an image in a format this service reads."""

    status = 400


class ImageTooLargeError(ImageError):
    """More pixels (or decoding memory) than allowed: refused before any pixel is decoded."""

    status = 413


class ImageRefusedError(ImageError):
    """A structure that would make decoding cost far more than the picture is worth."""

    status = 400


def no_reduction(width: int, height: int) -> int:
    return 1


def decode_image(
    data: bytes,
    limits: DecodeLimits = DEFAULT_LIMITS,
    reduction: Callable[[int, int], int] = no_reduction,
) -> Image.Image:
    """Decode frame 0 of an upload, upright (EXIF orientation applied), within ``limits``.

    ``reduction(width, height)`` is the integer factor by which the preprocessing lets the image
    shrink before it sees it (1: full size). Raises only ``ImageError`` subclasses, for any bytes.
    """
    image = open_image(data, limits)
    return load_reduced(image, reduction(*image.size))


def open_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> Image.Image:
    """The image with its header read and checked against ``limits``, no pixel decoded."""
    if not data:
        raise NotAnImageError(f"the upload is empty (0 bytes); {EXPECTED_UPLOAD}")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        _check_shape(*image.size, limits)
        if image.format in PHONE_FORMATS:
            layout = _coded_layout(data, image.format)
            _check_coded(layout, limits)
            image.info[CODED_LAYOUT_KEY] = layout
        if image.format == "JPEG" and image.info.get("progressive"):
            scans = data.count(JPEG_START_OF_SCAN)
            if scans > limits.max_jpeg_scans:
                raise ImageRefusedError(
                    f"the progressive JPEG has {scans:,} scans; at most {limits.max_jpeg_scans} "
                    "are decoded (an ordinary progressive JPEG has about 10): send it as a "
                    "baseline JPEG or a PNG"
                )
    except ImageError:
        raise
    except Exception as error:
        raise image_error(error, data, limits) from error
    return image


def _check_shape(width: int, height: int, limits: DecodeLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {limits.max_pixels:,} pixels; send a smaller picture"
        )
    if max(width, height) > limits.max_aspect_ratio * max(min(width, height), 1):
        raise ImageRefusedError(
            f"the image is {width}x{height} pixels, an aspect ratio beyond "
            f"{limits.max_aspect_ratio}:1; send a picture whose longer side is at most "
            f"{limits.max_aspect_ratio} times its shorter side"
        )


def _coded_layout(data: bytes, image_format: str) -> CodedLayout:
    """:func:`dlops.pipeline.phone_formats.coded_layout`, what it cannot read or will not as
    ImageErrors."""
    try:
        return coded_layout(data, image_format)
    except UnsupportedStructure as error:
        raise ImageRefusedError(str(error)) from None
    except MalformedFile:
        raise _damaged() from None


def _check_coded(layout: CodedLayout, limits: DecodeLimits) -> None:
    width, height = layout.largest
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image holds a {width}x{height} = {width * height:,} pixel picture to decode, "
            f"more than the limit of {limits.max_pixels:,} pixels; send a smaller picture"
        )


class Needs(Protocol):
    """What the preprocessing needs of a decoded picture (dlops/pipeline/preprocess/)."""

    def reduction(self, width: int, height: int) -> int:
        """The integer factor a ``width`` x ``height`` picture may shrink by when decoded."""

    def working_bytes(self, width: int, height: int) -> int:
        """What preprocessing a decoded ``width`` x ``height`` picture holds at most."""


@dataclass(frozen=True)
class Decoding:
    """An upload whose header passed the checks, to be decoded as the preprocessing needs it:
    shrunk by ``reduction``, with ``cost`` the memory that decoding and preprocessing it will
    take, known before either is paid."""

    image: Image.Image
    reduction: int
    cost: int

    def decode(self) -> Image.Image:
        """The pixels, reduced and upright; an ImageError if the file fails to decode."""
        return load_reduced(self.image, self.reduction)


def planned(image: Image.Image, needs: Needs) -> Decoding:
    """How ``image`` (opened by :func:`open_image`) will be decoded for ``needs``, and its cost."""
    reduction = needs.reduction(*image.size)
    working = needs.working_bytes(*reduced_size(*image.size, reduction))
    return Decoding(image, reduction, decode_cost(image, reduction) + working)


def decode_cost(image: Image.Image, reduction: int) -> int:
    """An upper bound of the memory (bytes) that ``load_reduced(image, reduction)`` takes."""
    if image.format in PHONE_FORMATS:
        return _phone_decode_cost(image, reduction)
    width, height = image.size
    if image.format == "JPEG":
        scale = _jpeg_scale(width, height, reduction)
        decoded = -(-width // scale) * -(-height // scale) * _pixel_bytes(image.mode)
        # What draft's scale leaves of the reduction is done by reduce(), a smaller copy.
        remaining = reduction // scale
        copy = decoded // (remaining * remaining) if remaining > 1 else 0
        if image.info.get("progressive"):
            decoded += width * height * len(image.getbands()) * COEFFICIENT_BYTES
        return decoded + copy
    # Other formats decode at full size; reduce() then makes a copy 1/reduction² as large, from
    # a converted copy for the modes it cannot average.
    full = width * height * _pixel_bytes(image.mode)
    if reduction == 1:
        return full
    converted = _reducible_mode(image)
    if converted is not None:
        full += width * height * _pixel_bytes(converted)
    return full + full // (reduction * reduction)


def _phone_decode_cost(image: Image.Image, reduction: int) -> int:
    """decode_cost of a HEIF or AVIF: decoded whole, by the numbers inside the file.

    The decoder's planes (``CodedLayout.decoder_bytes``), then its 8-bit interleaved RGB(A) or
    grey output at the composed size (libavif's buffer and Pillow's ``bytes`` copy of it for an
    AVIF; libheif's, which pillow-heif lends without a copy, for a HEIF), Pillow's own storage,
    and after it the copies reduce() and the EXIF transpose make. All summed, though the
    decoders free some before others exist: peaks measured on phone-sized pictures were 40-88 %
    of it (tests/test_phone_formats.py).
    """
    layout = image.info.get(CODED_LAYOUT_KEY)
    if not isinstance(layout, CodedLayout):
        # Not opened by open_image, so nothing was read from the file: the worst its declared
        # size allows (16-bit 4:4:4 planes, a scaled copy), which a hostile file can still exceed.
        layout = CodedLayout.declared(image.format, *image.size)
    width, height = image.size
    canvas = max(width * height, layout.canvas_pixels)
    stored = _pixel_bytes(image.mode)
    output = len(image.getbands()) * (2 if image.mode.startswith("I;16") else 1)
    if image.format == "AVIF":
        output *= 2
    total = PHONE_DECODER_OVERHEAD + layout.decoder_bytes + canvas * (output + stored)
    # Then reduce()'s smaller copy, and the EXIF transpose's copy of that for a turned AVIF
    # (libheif turns a HEIF itself, counted in decoder_bytes).
    try:
        turned = image.format == "AVIF" and _exif_orientation(image) != 1
    except Exception:  # EXIF that load_reduced will refuse: count the copy all the same
        turned = True
    copies = (reduction > 1) + turned
    total += copies * (canvas * stored // (reduction * reduction))
    converted = _reducible_mode(image) if reduction > 1 else None
    if converted is not None:  # a 16-bit grey HEIF is reduced as 32-bit integers
        total += canvas * _pixel_bytes(converted)
    return total


def reduced_size(width: int, height: int, reduction: int) -> tuple[int, int]:
    """The size ``load_reduced`` gives an image of ``width`` x ``height`` (before uprighting)."""
    return -(-width // reduction), -(-height // reduction)


def _pixel_bytes(mode: str) -> int:
    if mode in ONE_BYTE_MODES:
        return 1
    return 2 if mode.startswith("I;16") else 4


def _reducible_mode(image: Image.Image) -> str | None:
    """The mode to convert to before ``Image.reduce`` averages pixels (None: as it is)."""
    if image.mode == "1":
        return "L"
    if image.mode in ("P", "PA"):  # averaging palette indices would mix unrelated colours
        return "RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB"
    if image.mode.startswith("I;16"):
        return "I"
    return None


def _jpeg_scale(width: int, height: int, reduction: int) -> int:
    """The scale (1, 2, 4 or 8) that ``Image.draft`` picks for :func:`_jpeg_draft_size`."""
    draft_width, draft_height = _jpeg_draft_size(width, height, reduction)
    fits = min(width // draft_width, height // draft_height)
    return next(scale for scale in (8, 4, 2, 1) if fits >= scale)


def _jpeg_draft_size(width: int, height: int, reduction: int) -> tuple[int, int]:
    return max(1, width // reduction), max(1, height // reduction)


def load_reduced(image: Image.Image, reduction: int) -> Image.Image:
    """Decode ``image`` shrunk by up to ``reduction`` (an integer factor), then upright it."""
    try:
        # Orientation lives in EXIF (JPEG, WebP, PNG's eXIf chunk or its older text form, an
        # AVIF's irot/imir as Pillow states them) or in TIFF's own tags, read before reduce()
        # makes a copy without them; skipping the EXIF parse for uploads that carry none saves a
        # tenth of the work of a small request. libheif turns a HEIF itself (its orientation
        # is then 1).
        orientation = _exif_orientation(image)
        remaining = reduction
        if image.format == "JPEG" and reduction > 1:
            width, height = image.size
            scale = _jpeg_scale(width, height, reduction)
            image.draft(None, _jpeg_draft_size(width, height, reduction))
            remaining = reduction // scale
        image.load()
        if remaining > 1:
            # A box filter over whole blocks of pixels: cheap, and the preprocessing's own
            # resize still has at least twice the pixels it keeps (Preprocessor.reduction).
            mode, converted = image.mode, _reducible_mode(image)
            image = (image if converted is None else image.convert(converted)).reduce(remaining)
            if mode.startswith("I;16"):
                image = image.convert(mode)
        transpose = EXIF_TRANSPOSE.get(orientation)
        if transpose is not None:
            image = image.transpose(transpose)
    except ImageError:
        raise
    except Exception as error:
        raise image_error(error, None, DEFAULT_LIMITS) from error
    return image


def _exif_orientation(image: Image.Image) -> int:
    if EXIF_INFO_KEYS & image.info.keys() or image.format == "TIFF":
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    return 1


def image_error(error: Exception, data: bytes | None, limits: DecodeLimits) -> ImageError:
    """Pillow's many exceptions for hostile or damaged bytes, as ``ImageError``s.

    A function called from ``except``, not a context manager: on every request's path, a
    generator-based ``with`` costs more than the work it guards for a small image.
    """
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow's own global limit fired first (the warning only arrives here as an exception
        # when the application made warnings errors); its message is the only place with the size.
        declared = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        return ImageTooLargeError(
            f"the image has {size}, more than the limit of {limits.max_pixels:,} pixels; send a "
            "smaller picture"
        )
    if isinstance(error, Image.UnidentifiedImageError):
        too_large = _declared_too_large(data, limits) if data is not None else None
        if too_large is not None:
            return too_large
        if data is not None and is_phone_container(data):
            # libavif and libheif check the whole file when they open it, so a HEIC or AVIF
            # cut short or damaged is not even identified: it still is one, by its brands.
            return _damaged()
        size = f" ({len(data):,} bytes)" if data is not None else ""
        return NotAnImageError(
            f"the upload{size} is not an image in a format this service reads; {EXPECTED_UPLOAD}"
        )
    if isinstance(error, ValueError) and "MAX_TEXT" in str(error):
        return ImageRefusedError(
            f"the PNG carries more than {MAX_PNG_TEXT_BYTES // 1024:,} KiB of metadata in text "
            "(tEXt, zTXt, iTXt) or ICC-profile chunks, which the model never sees; send the "
            "image without it"
        )
    # Pillow's format parsers raise whatever the hostile or damaged byte stream provokes
    # (OSError, SyntaxError, EOFError, struct.error, IndexError, ...): to the client all of
    # these mean the same thing.
    return _damaged()


def _damaged() -> NotAnImageError:
    return NotAnImageError(
        f"the image data is damaged or truncated and cannot be decoded; {EXPECTED_UPLOAD}"
    )


def _declared_too_large(data: bytes, limits: DecodeLimits) -> ImageTooLargeError | None:
    """For a HEIF or AVIF its decoder refused to open: too large, if an item declares so."""
    width, height = largest_declared(data)
    if width * height <= limits.max_pixels:
        return None
    return ImageTooLargeError(
        f"the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
        f"{limits.max_pixels:,} pixels; send a smaller picture"
    )
