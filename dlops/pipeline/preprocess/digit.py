"""The ``digit`` preprocessing: any decoded image to an MNIST-style uint8 [28, 28] digit.

The digit models were trained on MNIST, so every upload is brought to MNIST's conventions: a
light digit on a black background, size-normalised so its longer side fills a 20x20 box
(anti-aliased, aspect ratio kept), placed in the 28x28 field so that its centre of mass sits at
the centre, full contrast.

    to_grayscale_ink   any mode -> float32 ink map in 0..1 (0 = background), whatever the polarity
    mnist_normalise    ink map -> crop, resize, centre by mass, stretch to 0..255
    to_mnist_digit     both, with a fast path for input that already is an MNIST digit

A blank image raises ``NoInkError`` (422). No serving framework here.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from dlops.pipeline.decode import DEFAULT_MAX_PIXELS, DecodeLimits, ImageError, decode_image
from dlops.pipeline.preprocess.depth import HIGH_DEPTH_MODES, scale_to_unit

MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST fits each digit into 20x20 and pads it to 28x28
# An ink map whose strongest mark is fainter than this (on a 0..1 scale, after the noise floor
# has been removed) is treated as blank: stretching it to full contrast would only amplify noise.
MIN_INK_CONTRAST = 0.1
# Pixels weaker than this share of the strongest ink do not widen the digit's bounding box, so
# that a faint smudge or JPEG ringing far from the digit does not shrink the digit itself.
BOX_INK_SHARE = 0.2
# The background level and the side the ink lies on are read from a frame this wide (a share of
# the shorter side): a digit covers much of a tightly cropped picture but little of its frame.
BORDER_SHARE = 0.03
# Share of pixels at each end of the histogram that decides whether ink is darker or lighter than
# the background; even a small digit on a large page covers more than this.
POLARITY_QUANTILE = 0.002
# Pixel noise (paper grain, sensor, JPEG) is measured on differences of pixels NOISE_LAG apart.
# Ink within NOISE_SIGMAS of the background is noise and removed; a picture in which nothing
# reaches NO_INK_SIGMAS (further than noise goes even once in millions of pixels) is blank.
NOISE_LAG = 2
NOISE_SIGMAS = 3.0
NO_INK_SIGMAS = 8.0
# Noise is measured on pixel pairs at least this far from ink, when they are at least this share
# of all pairs: fewer means "ink" is speckle all over (pure noise), and the few pairs left were
# picked for being quiet, which would understate the noise.
NOISE_INK_MARGIN = 2
MIN_NOISE_PAIR_SHARE = 0.1
NOISE_MIN_SIDE = 64
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
# Otsu's threshold splits ink from background; a share of it is taken off every pixel (which kills
# the haze that a shadow or JPEG blocking leaves) and marks the pixels the background fit ignores.
# At a quarter, most of the anti-aliased grey edge of each stroke survives.
OTSU_SHARE = 0.25
# The background is fitted as a quadratic surface so that shadows, vignetting and uneven lighting
# of phone photos are removed, yet no stroke, however bold, can be mistaken for background. Each
# round refits on the pixels that the previous one classified as background.
BACKGROUND_FIT_ROUNDS = 12
BACKGROUND_FIT_SAMPLE = 20_000
# Statistics (quantiles, Otsu, noise) are taken on a strided sample: a few 10^5 pixels pin them
# down as well as 10^7 would, at a fraction of the cost for large photos.
STATISTICS_SAMPLE = 100_000
# Fast path: MNIST digits peak at 253..255; anything fainter goes through the full normalisation.
MNIST_MIN_PEAK = 250
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class NoInkError(ImageError):
    """The image decodes but is blank (one uniform colour, or fully transparent)."""

    status = 422


def to_grayscale_ink(image: Image.Image) -> np.ndarray:
    """Map any image to float32 [H, W] ink in 0..1: 0 where there is background, 1 for full ink.

    With real transparency the alpha channel is the ink (canvas strokes on a transparent
    background, whatever their colour). Otherwise the background is what the picture's frame
    shows and the ink is whatever departs from it on the side that reaches further, so dark on
    light paper and light on dark (MNIST) both come out light on dark. The background is fitted
    as a smooth surface and subtracted, then its noise: paper texture, shadows and JPEG noise
    do not become ink, while anti-aliased stroke edges keep their grey levels.
    """
    lightness, alpha = _lightness_and_alpha(image)
    if alpha is None:
        frame = _frame_pixels(lightness)
        polarity = _ink_polarity(lightness, background_level=float(np.median(frame)))
    else:
        lightness, polarity = _composite_on_contrasting_backdrop(lightness, alpha)
        frame = _frame_pixels(lightness)
    if np.ptp(frame) == 0.0:
        # A perfectly even frame is a digital drawing or a rendered digit: its background is
        # that one value, and fitting a surface (the costly part for small images) is moot.
        ink = polarity * (lightness - frame[0])
    else:
        ink = polarity * (lightness - _background_surface(lightness, polarity))
    sample = _strided_sample(ink, STATISTICS_SAMPLE)
    otsu = _otsu_threshold(sample)
    noise_sigma = _noise_sigma(lightness, is_ink=ink > otsu)
    if float(ink.max()) < NO_INK_SIGMAS * noise_sigma:
        # Nothing stands out of the noise further than the noise itself does somewhere in a
        # million pixels: a photo of blank paper, whose specks must not be stretched into a digit.
        return np.zeros_like(ink)
    ink -= max(NOISE_SIGMAS * noise_sigma, OTSU_SHARE * otsu)
    return np.maximum(ink, 0.0, out=ink)


def mnist_normalise(ink: np.ndarray, size: int = MNIST_SIZE) -> np.ndarray:
    """Crop the ink, fit it into the digit box, centre it by mass in ``size`` x ``size``, 0..255.

    ``ink`` is light-on-dark with 0 as background: uint8 is read on the 0..255 scale, any other
    dtype on the 0..1 scale of ``to_grayscale_ink``. A uint8 array that already is an MNIST-style
    digit is returned unchanged, so real MNIST digits reach the model bit-exactly.
    """
    if ink.ndim != 2:
        raise ValueError(f"ink must be a 2-D array, got shape {ink.shape}")
    if ink.dtype == np.uint8:
        if _is_mnist_normalised(ink, size):
            return ink
        ink = ink.astype(np.float32) / 255.0
    # A caller's array may hold anything: NaN, infinities and float64 values beyond float32's
    # range count as background, values below the background as no ink.
    with np.errstate(over="ignore"):
        ink = np.asarray(ink, dtype=np.float32)
    ink = np.nan_to_num(ink, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(ink, 0.0, out=ink)
    peak = float(ink.max()) if ink.size else 0.0
    if peak < MIN_INK_CONTRAST:
        raise NoInkError(
            "the image is blank: it is one uniform colour (or fully transparent) with no "
            "visible strokes; expected a handwritten digit, e.g. dark ink on light paper or a "
            "drawing on a transparent canvas"
        )
    strong_ink = ink >= BOX_INK_SHARE * peak
    rows = np.flatnonzero(strong_ink.any(axis=1))
    columns = np.flatnonzero(strong_ink.any(axis=0))
    # On the 0..1 scale, so that the sums taken for the centre of mass cannot overflow.
    digit = ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1] / np.float32(peak)
    digit = _fit_into_box(digit, box=round(size * MNIST_BOX / MNIST_SIZE))
    field = _paste_centred_by_mass(digit, size)
    # LANCZOS rings slightly below zero next to strokes; the clip removes it before stretching.
    field = np.clip(field, 0.0, None) * (255.0 / float(field.max()))
    return np.rint(field).astype(np.uint8)


def to_model_input(
    data: bytes, size: int = MNIST_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Upload bytes -> uint8 [size, size] MNIST-style digit; raises only ImageError subclasses."""
    return to_mnist_digit(decode_image(data, DecodeLimits(max_pixels=max_pixels)), size=size)


def to_mnist_digit(image: Image.Image, size: int = MNIST_SIZE) -> np.ndarray:
    """A decoded image -> uint8 [size, size] MNIST-style digit; raises only ImageError subclasses.

    The second half of ``to_model_input``, apart so that decoding and preprocessing can be timed
    separately.
    """
    pixels = _mnist_pixels(image, size)
    if pixels is not None:
        return pixels
    return mnist_normalise(to_grayscale_ink(image), size=size)


def _lightness_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 lightness in 0..1 and, only if some pixel is not fully opaque, alpha in 0..1."""
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image).astype(np.float32)
        transparent_value = image.info.get("transparency")
        alpha = None
        # 16-bit grey PNGs mark one value transparent (tRNS); Pillow's convert would drop it.
        if isinstance(transparent_value, int) and np.any(values == transparent_value):
            alpha = (values != transparent_value).astype(np.float32)
        return scale_to_unit(values, image.mode), alpha
    if image.mode == "LAB":
        return np.asarray(image.getchannel("L"), dtype=np.float32) / 255.0, None
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        lightness_alpha = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0
        alpha = lightness_alpha[..., 1]
        return lightness_alpha[..., 0], None if alpha.min() == 1.0 else alpha
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, None


def _composite_on_contrasting_backdrop(
    lightness: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, float]:
    """Flatten strokes onto white if they are dark, onto black if light; return the ink polarity.

    Canvas apps store the colour of fully transparent pixels arbitrarily (often black), so only
    alpha-weighted colour counts; compositing then turns the alpha channel itself into contrast,
    and the backdrop, not a guess, says which side of it the ink is on.
    """
    coverage = float(alpha.sum())
    stroke_lightness = float((lightness * alpha).sum()) / coverage if coverage else 0.0
    backdrop, polarity = (1.0, -1.0) if stroke_lightness < 0.5 else (0.0, 1.0)
    return alpha * lightness + (1.0 - alpha) * backdrop, polarity


def _frame_pixels(lightness: np.ndarray) -> np.ndarray:
    """The pixels of a band along the picture's edges, where the background shows."""
    band = max(1, round(min(lightness.shape) * BORDER_SHARE))
    return np.concatenate(
        [
            lightness[:band].ravel(),
            lightness[-band:].ravel(),
            lightness[band:-band, :band].ravel(),
            lightness[band:-band, -band:].ravel(),
        ]
    )


def _ink_polarity(lightness: np.ndarray, background_level: float) -> float:
    """-1 when the ink is darker than the background (paper), +1 when lighter (MNIST, chalk).

    The ink is on the side that reaches further from the background level: paper is near
    white, so glare and uneven lighting stay close to it while pen strokes go far below.
    Extreme quantiles, not min/max, so that a few dead pixels do not decide.
    """
    offsets = _strided_sample(lightness, STATISTICS_SAMPLE) - background_level
    darkest, lightest = np.quantile(offsets, [POLARITY_QUANTILE, 1.0 - POLARITY_QUANTILE])
    return -1.0 if -darkest > lightest else 1.0


def _background_surface(lightness: np.ndarray, polarity: float) -> np.ndarray:
    """A quadratic surface through the background pixels, by fitting and refitting without ink.

    The first fit sees every pixel, so it already follows a shadow; each refit leaves out what
    the previous one's residual shows as ink (Otsu), which stops a bold digit that fills the
    picture from dragging the surface towards the ink. Six parameters cannot follow a stroke.
    """
    height, width = lightness.shape
    row_positions = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    column_positions = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    stride = _sample_stride(lightness.size, BACKGROUND_FIT_SAMPLE)
    rows, columns = np.meshgrid(row_positions[::stride], column_positions[::stride], indexing="ij")
    rows, columns = rows.ravel(), columns.ravel()
    values = lightness[::stride, ::stride].ravel()
    terms = np.stack(
        [np.ones_like(rows), columns, rows, columns * columns, columns * rows, rows * rows], axis=1
    )
    is_background = np.ones(values.shape, dtype=bool)
    coefficients = np.zeros(terms.shape[1], dtype=np.float32)
    for _ in range(BACKGROUND_FIT_ROUNDS):
        # Normal equations: a 6x6 system instead of a least-squares solve over every sample;
        # lstsq still copes with the rank-deficient case of a one-pixel-wide image.
        background_terms = terms[is_background]
        coefficients = np.linalg.lstsq(
            background_terms.T @ background_terms,
            background_terms.T @ values[is_background],
            rcond=None,
        )[0]
        residual_ink = polarity * (values - terms @ coefficients)
        still_background = residual_ink <= OTSU_SHARE * _otsu_threshold(residual_ink)
        if (
            np.array_equal(still_background, is_background)
            or still_background.sum() < terms.shape[1]
        ):
            break
        is_background = still_background
    constant, by_column, by_row, by_column2, by_both, by_row2 = coefficients.astype(np.float32)
    along_columns = constant + (by_column + by_column2 * column_positions) * column_positions
    along_rows = (by_row + by_row2 * row_positions) * row_positions
    return (
        along_rows[:, None]
        + along_columns[None, :]
        + by_both * row_positions[:, None] * column_positions[None, :]
    )


def _noise_sigma(lightness: np.ndarray, is_ink: np.ndarray) -> float:
    """Pixel noise (paper grain, sensor and JPEG noise) from differences between near neighbours.

    Pixels two apart share the background and the lighting, so their difference is noise alone;
    two apart rather than adjacent because JPEG smooths the noise of neighbours together. Pairs
    near ink are left out: in a tight crop of a bold digit most pairs straddle a stroke, and
    their differences would pass for noise loud enough to hide the digit itself. Where nothing
    is far from ink (pure noise, where "ink" is speckled everywhere) all pairs count, and the
    median ignores stroke edges. A difference holds the noise of two pixels.
    """
    stride = _sample_stride(lightness.size, STATISTICS_SAMPLE)
    rows = lightness[::stride]
    if rows.shape[1] <= NOISE_LAG:
        return 0.0
    differences = rows[:, NOISE_LAG:] - rows[:, :-NOISE_LAG]
    far = ~_dilate(is_ink[::stride], NOISE_INK_MARGIN)
    background_differences = differences[far[:, NOISE_LAG:] & far[:, :-NOISE_LAG]]
    if background_differences.size >= MIN_NOISE_PAIR_SHARE * differences.size:
        differences = background_differences
    elif min(lightness.shape) < NOISE_MIN_SIDE:
        # A small picture that is ink nearly everywhere is a tight digital crop of a digit (a
        # scan, a dataset image), not a photo of paper: its noise cannot be told from its strokes,
        # so none is assumed and only the contrast test decides whether it is blank.
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(differences))) / np.sqrt(2.0)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask grown by ``radius`` pixels in every direction (a square structuring element)."""
    grown = mask.copy()
    for shift in range(1, radius + 1):
        grown[shift:] |= mask[:-shift]
        grown[:-shift] |= mask[shift:]
    rows_grown = grown.copy()
    for shift in range(1, radius + 1):
        grown[:, shift:] |= rows_grown[:, :-shift]
        grown[:, :-shift] |= rows_grown[:, shift:]
    return grown


def _sample_stride(pixel_count: int, sample_size: int) -> int:
    return max(1, int(np.ceil(np.sqrt(pixel_count / sample_size))))


def _strided_sample(values: np.ndarray, sample_size: int) -> np.ndarray:
    stride = _sample_stride(values.size, sample_size)
    return values[::stride, ::stride].ravel()


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values clipped to 0..1: the level that best splits two classes."""
    levels = np.clip(values * (bins - 1), 0, bins - 1).astype(np.intp)
    counts = np.bincount(levels, minlength=bins).astype(np.float64)
    bin_levels = np.arange(bins, dtype=np.float64)
    weight_below = np.cumsum(counts)
    weight_above = weight_below[-1] - weight_below
    mass_below = np.cumsum(counts * bin_levels)
    mean_below = mass_below / np.maximum(weight_below, 1.0)
    mean_above = (mass_below[-1] - mass_below) / np.maximum(weight_above, 1.0)
    between_class_variance = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(np.argmax(between_class_variance)) / (bins - 1)


def _fit_into_box(digit: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is ``box`` pixels, keeping the aspect ratio, anti-aliased."""
    height, width = digit.shape
    scale = box / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap first box-averages large photos by an integer factor (cheap, area-correct),
    # then LANCZOS does the rest, so a 3000-pixel digit is not aliased down to 20 pixels.
    resized = Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32)).resize(
        target, Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    return np.asarray(resized, dtype=np.float32)


def _centre_of_mass(values: np.ndarray) -> tuple[float, float]:
    total = float(values.sum())
    row_com = float(values.sum(axis=1) @ np.arange(values.shape[0])) / total
    column_com = float(values.sum(axis=0) @ np.arange(values.shape[1])) / total
    return row_com, column_com


def _paste_centred_by_mass(digit: np.ndarray, size: int) -> np.ndarray:
    """Place ``digit`` in a size x size field so its centre of mass lands on pixel size/2.

    MNIST translated by whole pixels, leaving each centre of mass within half a pixel of (14, 14);
    a lopsided digit may stick out of the field, and that part is cut off, as in MNIST.
    """
    row_com, column_com = _centre_of_mass(np.clip(digit, 0.0, None))
    top = int(np.floor(size / 2 - row_com + 0.5))
    left = int(np.floor(size / 2 - column_com + 0.5))
    field = np.zeros((size, size), dtype=np.float32)
    height, width = digit.shape
    field_rows = slice(max(top, 0), min(top + height, size))
    field_columns = slice(max(left, 0), min(left + width, size))
    field[field_rows, field_columns] = digit[
        field_rows.start - top : field_rows.stop - top,
        field_columns.start - left : field_columns.stop - left,
    ]
    return field


def _is_mnist_normalised(pixels: np.ndarray, size: int) -> bool:
    """True for a uint8 light-on-black digit that fits the box, is centred and at full contrast."""
    return pixels.shape == (size, size) and _mnist_pixels(Image.fromarray(pixels), size) is not None


def _mnist_pixels(image: Image.Image, size: int) -> np.ndarray | None:
    """The pixels of a grey ``size`` x ``size`` image that already is an MNIST-style digit, else
    None: light on black, fitting the box, at full contrast, centred by mass.

    The background must be exactly 0 (as in MNIST) for the bounding box to fit the box, so any
    noisy or dark-on-light picture goes through the full pipeline instead.
    """
    if image.mode != "L" or image.size != (size, size) or "transparency" in image.info:
        return None
    # This runs on every MNIST-style request: Pillow's bounding box of the non-zero pixels and
    # its extrema (in C) turn other pictures away before any array is made.
    box = round(size * MNIST_BOX / MNIST_SIZE)
    bounds = image.getbbox()
    if bounds is None or bounds[2] - bounds[0] > box or bounds[3] - bounds[1] > box:
        return None  # blank, or too wide or tall
    if image.getextrema()[1] < MNIST_MIN_PEAK:
        return None
    pixels = np.array(image)  # a writable copy: the caller may batch or scale it in place
    weights = _moment_weights(size)
    # [[total, column moment], [row moment, _]]: exact in float64 for any 8-bit picture this size.
    moments = weights @ pixels @ weights.T
    total = moments[0, 0]
    row_com, column_com = moments[1, 0] / total, moments[0, 1] / total
    centred = abs(row_com - size / 2) <= 1.0 and abs(column_com - size / 2) <= 1.0
    return pixels if centred else None


@functools.cache
def _moment_weights(size: int) -> np.ndarray:
    """[1, ..., 1] over [0, 1, ..., size - 1]: what the pixels are weighted by for their mass and
    its centre."""
    return np.stack([np.ones(size), np.arange(size, dtype=np.float64)])
