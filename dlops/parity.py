"""The parity check: a model's answers through the stored steps against its own pipeline's.

``answers.json`` holds images and the probabilities the user's own pipeline gives them::

    {"answers": [{"image": "photos/cat.jpg", "probabilities": [0.01, 0.97, 0.02]}, ...]}

(a binary model's list holds one value, P(positive); image paths are relative to the file).
:func:`check` runs every image through what the service runs (the same decode, reduced decoding,
steps, onnxruntime and activation) and compares, per image and overall: top-1 agreement (the same
answer: the argmax, the side of the threshold, or the set of labels at or above it) and the
largest absolute difference of any probability. No BentoML here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlops.decode import DecodeLimits, ImageError, decode_image
from dlops.inference import Classifier
from dlops.postprocess import Postprocessor
from dlops.preprocess import Preprocessor
from dlops.spec import ModelSpec

WORST_SHOWN = 5
# The largest image a parity check decodes, as the service's default limit does.
PARITY_LIMITS = DecodeLimits()


class ParityError(ValueError):
    """An answers file that cannot be checked: the message says what is wrong and what is wanted."""


@dataclass(frozen=True)
class Tolerance:
    min_agreement: float = 0.99  # the share of images whose answer is the same
    max_delta: float = 0.02  # the largest |Δp| of any probability of any image


@dataclass(frozen=True)
class Expected:
    image: Path
    probabilities: np.ndarray  # float64 [K] (binary: [1], P(positive))


@dataclass(frozen=True)
class ImageParity:
    image: str
    agrees: bool
    max_delta: float
    served: str  # the answer dlops gives, as a label (several joined by "+" for multi-label)
    expected: str


@dataclass(frozen=True)
class ParityReport:
    images: tuple[ImageParity, ...]

    @property
    def agreement(self) -> float:
        return sum(item.agrees for item in self.images) / len(self.images)

    def deltas(self) -> np.ndarray:
        return np.array([item.max_delta for item in self.images])

    def passes(self, tolerance: Tolerance) -> bool:
        return (
            self.agreement >= tolerance.min_agreement
            and float(self.deltas().max()) <= tolerance.max_delta
        )

    def lines(self, tolerance: Tolerance) -> list[str]:
        """What the import prints: the figures overall, then the worst images."""
        deltas = self.deltas()
        agreeing = sum(item.agrees for item in self.images)
        verdict = "passed" if self.passes(tolerance) else "FAILED"
        lines = [
            f"parity: {verdict}: {len(self.images)} images; top-1 agreement {agreeing}/"
            f"{len(self.images)} ({self.agreement:.1%}, at least {tolerance.min_agreement:.0%} "
            f"required); max |Δp| median {np.median(deltas):.4f}, p95 "
            f"{np.percentile(deltas, 95):.4f}, max {deltas.max():.4f} (at most "
            f"{tolerance.max_delta:g} required)"
        ]
        worst = sorted(self.images, key=lambda item: (item.agrees, -item.max_delta))
        for item in worst[:WORST_SHOWN]:
            if item.max_delta == 0.0 and item.agrees:
                break
            answer = "same answer" if item.agrees else f"{item.served} here, {item.expected} there"
            lines.append(f"parity:   {item.image}: max |Δp| {item.max_delta:.4f}, {answer}")
        return lines


def parse_tolerance(text: str) -> Tolerance:
    """``AGREEMENT,DELTA``, e.g. ``0.97,0.05`` (top-1 agreement at least 97 %, max |Δp| 0.05)."""
    try:
        agreement, delta = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected AGREEMENT,MAX_DELTA such as 0.99,0.02, got {text!r}") from None
    if not (0.0 <= agreement <= 1.0 and 0.0 <= delta <= 1.0):
        raise ValueError(f"both parts are between 0 and 1, got {text!r}")
    return Tolerance(agreement, delta)


def read_answers(path: Path, classes: int) -> list[Expected]:
    """The answers file's entries; ParityError saying what is wrong with it."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ParityError(f"{path}: not readable JSON ({error})") from None
    entries = data.get("answers") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ParityError(
            f'{path}: expected {{"answers": [{{"image": PATH, "probabilities": [...]}}, ...]}} '
            "with at least one entry"
        )
    expected = []
    for index, entry in enumerate(entries):
        where = f"{path.name} answers[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise ParityError(f'{where}: expected {{"image": PATH, "probabilities": [...]}}')
        values = entry.get("probabilities")
        values = [values] if isinstance(values, int | float) else values
        if (
            not isinstance(values, list)
            or len(values) != classes
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        ):
            raise ParityError(
                f"{where}: probabilities must be {classes} finite number(s), one per output unit "
                f"of the model (a binary model: P(positive)); got {values!r}"
            )
        image = Path(entry["image"])
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise ParityError(f"{where}: no such image {image}")
        expected.append(Expected(image, np.asarray(values, dtype=np.float64)))
    return expected


def served_probabilities(
    classifier: Classifier, preprocessor: Preprocessor, post: Postprocessor, data: bytes
) -> np.ndarray:
    """What the service computes for one uploaded file: probabilities [K] (binary: [1])."""
    image = decode_image(data, PARITY_LIMITS, preprocessor.reduction)
    return post.probabilities(classifier.run(preprocessor(image)[None]))[0]


def check(model_path: Path, spec: ModelSpec, expected: list[Expected]) -> ParityReport:
    """Every expected image through the stored steps, compared with its expected answer."""
    classifier = Classifier(model_path, spec)
    preprocessor, post = Preprocessor(spec), Postprocessor(spec.postprocess)
    results = []
    for item in expected:
        try:
            served = served_probabilities(classifier, preprocessor, post, item.image.read_bytes())
        except ImageError as error:
            raise ParityError(f"{item.image}: the service would refuse it: {error}") from None
        delta = float(np.max(np.abs(served - item.probabilities)))
        served_answer, expected_answer = _answer(post, served), _answer(post, item.probabilities)
        results.append(
            ImageParity(
                item.image.name,
                served_answer == expected_answer,
                delta,
                served_answer,
                expected_answer,
            )
        )
    return ParityReport(tuple(results))


def _answer(post: Postprocessor, probabilities: np.ndarray) -> str:
    """The answer the probabilities give, as the service would label it."""
    if post.spec.is_multi_label:
        return "+".join(post.labels_above(probabilities)) or "(none)"
    return post.label_of(probabilities)
