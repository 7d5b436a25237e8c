"""Upload bytes to a decoded, upright ``PIL.Image``: the one place that opens untrusted images.

Every failure caused by the upload raises an ``ImageError`` subclass whose ``status`` is the HTTP
status to answer with and whose message says what was wrong and what is expected. No serving
framework here, so it is tested on its own.
"""

from __future__ import annotations

import io
import re

from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 40_000_000
# EPS and friends are left out on purpose: Pillow hands them to Ghostscript, which has no business
# running on untrusted uploads. MPO (multi-picture JPEG from phones) is opened by the JPEG plugin.
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
EXPECTED_UPLOAD = "expected a PNG, JPEG, GIF, BMP, WebP or TIFF image"
EXIF_INFO_KEYS = {"exif", "Raw profile type exif"}


class ImageError(ValueError):
    """The upload cannot be turned into the model's input; ``status`` is the HTTP status."""

    status: int = 400


class NotAnImageError(ImageError):
    """Empty, truncated, damaged, or not an image in a format this service reads."""

    status = 400


class ImageTooLargeError(ImageError):
    """More pixels than allowed: rejected from the header, before any pixel is decoded."""

    status = 413


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode frame 0 of an upload, upright (EXIF orientation applied), after a pixel-count check.

    Raises NotAnImageError for anything that is not a readable image and ImageTooLargeError when
    the header declares more than ``max_pixels`` pixels; no other exception escapes for any bytes.
    """
    if not data:
        raise NotAnImageError(f"the upload is empty (0 bytes); {EXPECTED_UPLOAD}")
    try:
        # Image.open only parses the header, so the size check below runs before any decoding.
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"the image is {width}x{height} = {width * height:,} pixels, more than the limit "
                f"of {max_pixels:,} pixels; send a smaller picture"
            )
        image.load()
        # Orientation lives in EXIF (JPEG, WebP, PNG's eXIf chunk or its older text form) or in
        # TIFF's own tags; skipping the EXIF parse for uploads that carry none saves a tenth of
        # the work of a small request.
        if EXIF_INFO_KEYS & image.info.keys() or image.format == "TIFF":
            ImageOps.exif_transpose(image, in_place=True)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own global limit fired first (the warning only arrives here as an exception
        # when the application made warnings errors); its message is the only place with the size.
        declared = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(declared.group(1)):,} pixels" if declared else "too many pixels"
        raise ImageTooLargeError(
            f"the image has {size}, more than the limit of {max_pixels:,} pixels; send a "
            "smaller picture"
        ) from error
    except Image.UnidentifiedImageError as error:
        raise NotAnImageError(
            f"the upload ({len(data):,} bytes) is not an image in a format this service reads; "
            f"{EXPECTED_UPLOAD}"
        ) from error
    except Exception as error:
        # Pillow's format parsers raise whatever the hostile or damaged byte stream provokes
        # (OSError, SyntaxError, EOFError, struct.error, IndexError, ...): to the client all of
        # these mean the same thing.
        raise NotAnImageError(
            f"the image data is damaged or truncated and cannot be decoded; {EXPECTED_UPLOAD}"
        ) from error
    return image
