"""Validate an ONNX image classifier and import it into the BentoML model store.

    python import_model.py [PATH] [--name binary_classifier_3] [--threshold 0.5] [--labels "no 3,3"]

The graph must pass the ONNX checker, open in onnxruntime and answer one logit per image for one
uint8 [N, height, width] input. Its signature, sha256, threshold, labels and the metrics from the
model card's JSON (``<model>.metrics.json`` beside the file, when present) are stored as model
metadata, which the service reads instead of hard-coding them. Importing the same file with the
same settings again is a no-op that prints the existing tag.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dlops import config
from dlops.inference import BinaryImageClassifier, SignatureError
from dlops.model_store import damage, file_sha256

DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "binary_classifier_3.onnx"
MODEL_CARD_NAME = "MODEL_CARD.md"


class ImportRefused(Exception):
    """The file is not a model this service can serve; the message says why, on one line."""


def parse_labels(text: str) -> tuple[str, str]:
    labels = tuple(part.strip() for part in text.split(","))
    if len(labels) != 2 or not all(labels):
        raise argparse.ArgumentTypeError(
            f"--labels takes two comma-separated names, below then above the threshold "
            f'(e.g. "no 3,3"), got {text!r}'
        )
    return labels[0], labels[1]


def parse_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"--threshold must be a number between 0 and 1, got {text!r}"
        )
    return value


def validate(path: Path, threshold: float, labels: tuple[str, str]) -> BinaryImageClassifier:
    """Refuse anything the service could not load or would answer wrongly for."""
    import onnx  # only the importer needs the checker; the service runs on onnxruntime alone

    if not path.is_file():
        raise ImportRefused(f"{path}: no such file (train one with `make train` or give a path)")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # the checker raises several types, protobuf's among them
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise ImportRefused(f"{path}: not a valid ONNX model ({first_line})") from error
    try:
        classifier = BinaryImageClassifier(path, threshold, labels)
    except SignatureError as error:
        raise ImportRefused(f"{path}: wrong signature: {error}") from error
    except Exception as error:  # onnxruntime's own errors are not a public hierarchy
        raise ImportRefused(f"{path}: onnxruntime cannot open it ({error})") from error
    size = classifier.image_size
    try:
        logits = classifier.logits(np.zeros((2, size, size), dtype=np.uint8))
    except Exception as error:
        raise ImportRefused(
            f"{path}: a trial inference on a batch of 2 failed ({error})"
        ) from error
    if logits.shape != (2,) or not np.all(np.isfinite(logits)):
        raise ImportRefused(f"{path}: a trial batch of 2 gave {logits!r}, not 2 finite logits")
    return classifier


def card_metrics(path: Path) -> dict[str, Any]:
    """The held-out test metrics written by training/train.py, if they sit beside the model."""
    metrics_path = path.with_suffix(".metrics.json")
    if not metrics_path.is_file():
        return {}
    return dict(json.loads(metrics_path.read_text()).get("test", {}))


def build_metadata(
    path: Path, classifier: BinaryImageClassifier, threshold: float, labels: tuple[str, str]
) -> dict[str, Any]:
    signature = classifier.signature
    return {
        "sha256": file_sha256(path),
        "source_file": path.name,
        "input_name": signature.input_name,
        "input_dtype": signature.input_dtype,
        "input_shape": [str(dim) for dim in signature.input_shape],
        "image_size": classifier.image_size,
        "output_name": signature.output_name,
        "threshold": threshold,
        "labels": list(labels),
        "metrics": card_metrics(path),
    }


def latest_matching(name: str, metadata: dict[str, Any]) -> Any | None:
    """The latest stored version, when it already holds these bytes with these settings.

    Only the latest counts: if an older version matched, `:latest` would still serve another
    model, so importing again must make this one the latest. A latest version whose stored file
    was damaged does not count either: importing again is how the service's start-up check tells
    users to repair it.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        latest = bentoml.models.get(f"{name}:latest")
    except NotFound:
        return None
    stored = latest.info.metadata
    same = all(stored.get(key) == metadata[key] for key in ("sha256", "threshold", "labels"))
    return latest if same and damage(latest) is None else None


def import_model(
    path: Path, name: str, threshold: float, labels: tuple[str, str]
) -> tuple[str, bool]:
    """Returns the model's tag and whether a new version was created."""
    import bentoml

    classifier = validate(path, threshold, labels)
    metadata = build_metadata(path, classifier, threshold, labels)
    existing = latest_matching(name, metadata)
    if existing is not None:
        return str(existing.tag), False
    with bentoml.models.create(
        name, labels={"framework": "onnx", "task": "binary-image-classification"}, metadata=metadata
    ) as model:
        shutil.copyfile(path, model.path_of(config.MODEL_FILE_NAME))
        card = path.parent / MODEL_CARD_NAME
        if card.is_file():
            shutil.copyfile(card, model.path_of(MODEL_CARD_NAME))
    return str(model.tag), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_MODEL_PATH, help="ONNX file")
    parser.add_argument("--name", default=config.DEFAULT_MODEL_NAME, help="model store name")
    parser.add_argument("--threshold", type=parse_threshold, default=config.DEFAULT_THRESHOLD)
    parser.add_argument(
        "--labels",
        type=parse_labels,
        default=config.DEFAULT_LABELS,
        help='below-threshold and above-threshold labels, comma-separated (default "no 3,3")',
    )
    args = parser.parse_args(argv)
    try:
        tag, created = import_model(args.path, args.name, args.threshold, args.labels)
    except ImportRefused as refusal:
        print(f"import_model.py: error: {refusal}", file=sys.stderr)
        return 1
    print(f"{'imported' if created else 'already imported, unchanged'}: {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
