"""The parity check: a model's answers through the stored steps against its own pipeline's.

``answers.json`` holds images and the probabilities the user's own pipeline gives them::

    {"answers": [{"image": "photos/cat.jpg", "probabilities": [0.01, 0.97, 0.02]}, ...]}

(a binary model's list holds one value, P(positive); image paths are relative to the file).
:func:`check` runs every image through what the service runs (the same decode, reduced decoding,
steps, onnxruntime and activation) and compares, per image and overall: top-1 agreement (the same
answer: the argmax, the side of the threshold, or the set of labels at or above it) and the
largest absolute difference of any probability. No BentoML here.

Its twin checks a running server against the same file, over HTTP (the standard library only)::

    python -m dlops.pipeline.parity answers.json --url http://localhost:3000 [--tolerance 0.99,0.02]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlops.model.spec import ModelSpec, PostprocessSpec
from dlops.pipeline.decode import DecodeLimits, ImageError, decode_image
from dlops.pipeline.inference import Classifier
from dlops.pipeline.postprocess import Postprocessor
from dlops.pipeline.preprocess import Preprocessor

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
    served: str  # the answer dlops gives, as a label (several joined by ", " for multi-label)
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

    def served(data: bytes) -> np.ndarray:
        try:
            return served_probabilities(classifier, preprocessor, post, data)
        except ImageError as error:
            raise ParityError(f"the service would refuse it: {error}") from None

    return compare(post, expected, served)


def compare(
    post: Postprocessor, expected: list[Expected], served: Callable[[bytes], np.ndarray]
) -> ParityReport:
    """``served(file bytes)``'s probabilities against each expected image's."""
    results = []
    for item in expected:
        try:
            served_row = served(item.image.read_bytes())
        except ParityError as error:
            raise ParityError(f"{item.image}: {error}") from None
        delta = float(np.max(np.abs(served_row - item.probabilities)))
        served_answer = _answer(post, served_row)
        expected_answer = _answer(post, item.probabilities)
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
    """The answer the probabilities give, as the service labels it (/v2's label output)."""
    return post.label_of(probabilities) or "(no label)"


# --- the twin: a running server ---------------------------------------------------------------


class ServerAnswers:
    """A running dlops server's probabilities for uploaded files, through ``POST /predict``."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        model = self._json(
            urllib.request.Request(f"{self.url}/ui/model.json", headers=self.headers)
        )
        labels = tuple(model["labels"])
        classes = 1 if model["binary"] else len(labels)
        self.post = Postprocessor(
            PostprocessSpec(
                output="",
                classes=classes,
                activation="none",
                labels=labels,
                threshold=model.get("threshold"),
                top_k=classes,
                task="multi" if model.get("multi_label") else "single",
            )
        )

    def _json(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ParityError(
                f"{request.full_url} answered {error.code}: {error.read()!r}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise ParityError(f"{request.full_url}: {error}") from None

    def probabilities(self, data: bytes) -> np.ndarray:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="image"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {**self.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        request = urllib.request.Request(
            f"{self.url}/predict?top_k=0", data=body, headers=headers, method="POST"
        )
        answer = self._json(request)
        if "top_k" not in answer:  # binary: P(positive)
            return np.array([answer["proba"]], dtype=np.float64)
        row = np.zeros(self.post.classes)
        for entry in answer["top_k"]:
            row[entry["index"]] = entry["proba"]
        return row


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m dlops.pipeline.parity",
        description="Check a running dlops server's answers against answers.json.",
    )
    cli.add_argument("answers", type=Path, help='{"answers": [{"image", "probabilities"}, ...]}')
    cli.add_argument(
        "--url", default="http://localhost:3000", help="the server (default: %(default)s)"
    )
    cli.add_argument("--tolerance", type=parse_tolerance, default=Tolerance(), metavar="A,D")
    args = cli.parse_args(argv)
    try:
        server = ServerAnswers(args.url, os.environ.get("API_KEY"))
        report = compare(
            server.post, read_answers(args.answers, server.post.classes), server.probabilities
        )
    except ParityError as error:
        print(f"python -m dlops.pipeline.parity: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines(args.tolerance)))
    return 0 if report.passes(args.tolerance) else 1


if __name__ == "__main__":
    sys.exit(main())
