"""Train, evaluate and export the 10-class handwritten digit classifier (0-9).

Run from the repository root::

    python -m training.train_digits10 [--seed 3] [--epochs 20] [--out models/digits_10.onnx]

Same data, split, network body, augmentation and export as the "is it a 3?" model in
``training/train.py`` (imported from there, not copied); what differs is the last layer
(10 logits), the loss (cross-entropy over the digits) and the metrics. It writes one
self-contained ONNX file and ``<out stem>.metrics.json`` beside it, with the held-out test
split, the val split, a noise check and, unless ``--skip-uci``, the UCI digits from
scikit-learn sent through the service's image pipeline (``training/evaluate_uci.py``; that
needs scikit-learn and the dlops package, so it is imported only when used).

The graph takes the raw uint8 [N, 28, 28] image and returns raw logits [N, 10]: serving
applies the softmax, so the graph must not.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from training.data import Split
from training.train import (
    NEGATIVE_KINDS,
    NOISE_CHECK_PER_KIND,
    NOISE_CHECK_SEED_OFFSET,
    SmallCNN,
    export_onnx,
    fit,
    start_run,
    to_uint8,
    training_parser,
)

LABELS = tuple(str(digit) for digit in range(10))
N_CLASSES = len(LABELS)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# A picture of nothing should leave the softmax close to flat (0.1 each); export is refused
# if any noise image gets a top-class probability this high, i.e. reads as a confident digit.
NOISE_MAX_CONFIDENCE = 0.5
# Upscaled sizes for the UCI check, as in the binary model's card.
UCI_SIDES = (16, 32, 128)
DOC_STRING = (
    "Handwritten digit classifier, 10 classes, trained on MNIST. Input 'input': uint8 "
    "[N, 28, 28], 0-255, one white digit on black prepared as MNIST (fitted into 20x20, centred "
    "by centre of mass); the scaling is inside the graph. Output 'logits': float32 [N, 10], raw "
    "logits for the digits 0-9 in that order; apply softmax for probabilities. Class names are "
    "in metadata_props 'labels'. Trained by training/train_digits10.py."
)


class DigitClassifier(SmallCNN):
    """uint8 [N, 28, 28] white-on-black digit -> float32 logits [N, 10] for the digits 0-9."""

    def __init__(self) -> None:
        super().__init__(n_outputs=N_CLASSES)


# --- metrics --------------------------------------------------------------------------


def multiclass_metrics(digits: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of [N, 10] logits.

    confusion_matrix[true digit][predicted digit] counts images. Log loss is the mean
    negative log softmax probability of the true digit, so over-confident mistakes show.
    """
    predicted = logits.argmax(axis=1)
    confusion = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(confusion, (digits, predicted), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    for digit, label in enumerate(LABELS):
        tp = int(confusion[digit, digit])
        support, n_predicted = int(confusion[digit].sum()), int(confusion[:, digit].sum())
        precision = tp / n_predicted if n_predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
    errors = int(len(digits) - np.trace(confusion))
    true_class_proba = softmax(logits)[np.arange(len(digits)), digits]
    return {
        "accuracy": round(1.0 - errors / len(digits), 4),
        "macro_precision": round(float(np.mean([c["precision"] for c in per_class.values()])), 4),
        "macro_recall": round(float(np.mean([c["recall"] for c in per_class.values()])), 4),
        "macro_f1": round(float(np.mean([c["f1"] for c in per_class.values()])), 4),
        "log_loss": round(float(-np.log(np.maximum(true_class_proba, 1e-300)).mean()), 4),
        "errors": errors,
        "n": len(digits),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def uci_metrics(evaluate_uci: ModuleType, model: Path, side: int) -> dict[str, Any]:
    """multiclass_metrics on the UCI digits at one upscaled size, scored from the exported file.

    Images the service's pipeline rejects are left out; accuracy_all counts them as wrong.
    """
    digits, logits, unreadable = evaluate_uci.uci_digits10_logits(str(model), side)
    metrics = multiclass_metrics(digits, logits)
    metrics["unreadable"] = unreadable
    correct = metrics["n"] - metrics["errors"]
    metrics["accuracy_all"] = round(correct / (metrics["n"] + unreadable), 4)
    return metrics


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """float32 [N, 10] logits in eval mode (dropout off)."""
    model.eval()
    return model(images).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    # float64 with the row max subtracted, so exp() cannot overflow.
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def noise_check(model: nn.Module, seed: int) -> dict[str, float]:
    """Highest top-class probability over fresh images of each negative kind.

    Uses the same separate seed stream as training/train.py, so these images are never
    among the training negatives.
    """
    gen = torch.Generator().manual_seed(seed + NOISE_CHECK_SEED_OFFSET)
    report = {}
    for kind, make in NEGATIVE_KINDS.items():
        logits = predict_logits(model, to_uint8(make(NOISE_CHECK_PER_KIND, gen)))
        report[f"{kind}_max_probability"] = round(float(softmax(logits).max()), 4)
    return report


def train(
    model: DigitClassifier, train_split: Split, val_split: Split, epochs: int, seed: int
) -> None:
    val_images = torch.from_numpy(val_split.images)

    def validate(trained: nn.Module) -> str:
        val = multiclass_metrics(val_split.digits, predict_logits(trained, val_images))
        return f"val accuracy {val['accuracy']:.4f}  val log loss {val['log_loss']:.4f}"

    # There is no "not a digit" class, so pictures of nothing are taught a flat answer (0.1 for
    # every digit) instead: noise then gets a low top-class probability, which a caller can
    # threshold, rather than landing confidently on whichever digit it resembles. cross_entropy
    # takes class probabilities as targets: one-hot digits, flat noise.
    fit(
        model,
        torch.from_numpy(train_split.images),
        F.one_hot(torch.from_numpy(train_split.digits), N_CLASSES).to(torch.float32),
        torch.full((N_CLASSES,), 1.0 / N_CLASSES),
        F.cross_entropy,
        validate,
        epochs,
        seed,
    )


# --- export ---------------------------------------------------------------------------


def add_metadata(out: Path) -> None:
    """Label names and a description inside the file, so it documents its own output."""
    proto = onnx.load(str(out))
    proto.doc_string = DOC_STRING
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    # Compact separators: the value reads ["0","1",...,"9"], the same for any JSON writer.
    entry.key, entry.value = "labels", json.dumps(list(LABELS), separators=(",", ":"))
    onnx.save(proto, str(out))


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def verify_onnx(model: DigitClassifier, out: Path, test_images: torch.Tensor) -> float:
    """Check the file against the serving contract and torch; return max |logit diff|."""
    # The path form lets the checker load the file itself, as a consumer would.
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out), load_external_data=False)
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise SystemExit(f"{out} references external data: {external}")
    (graph_input,), (graph_output,) = proto.graph.input, proto.graph.output
    contract = {
        "input": (graph_input.name, graph_input.type.tensor_type.elem_type, _dims(graph_input)),
        "output": (graph_output.name, graph_output.type.tensor_type.elem_type, _dims(graph_output)),
    }
    expected = {
        "input": (INPUT_NAME, onnx.TensorProto.UINT8, ["batch", 28, 28]),
        "output": (OUTPUT_NAME, onnx.TensorProto.FLOAT, ["batch", N_CLASSES]),
    }
    if contract != expected:
        raise SystemExit(f"ONNX signature {contract}, expected {expected}")
    # Serving applies the softmax; a second one in the graph would flatten every answer.
    if proto.graph.node[-1].op_type == "Softmax":
        raise SystemExit(f"{out} ends in a Softmax node; it must return raw logits")
    metadata = {p.key: p.value for p in proto.metadata_props}
    if json.loads(metadata.get("labels", "null")) != list(LABELS):
        raise SystemExit(f"{out} metadata_props 'labels' is {metadata.get('labels')!r}")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 2, 64):
        (shaped,) = session.run([OUTPUT_NAME], {INPUT_NAME: test_images[:batch].numpy()})
        if shaped.shape != (batch, N_CLASSES) or shaped.dtype != np.float32:
            raise SystemExit(f"ONNX output for batch {batch} is {shaped.dtype} {shaped.shape}")
    (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: test_images.numpy()})
    max_diff = float(np.abs(onnx_logits - predict_logits(model, test_images)).max())
    if max_diff > 1e-3:
        raise SystemExit(f"ONNX and torch disagree on the test split: max |logit diff| {max_diff}")
    return max_diff


def _one_line(match: re.Match[str]) -> str:
    """A flat JSON list or object on one line, if that line stays short enough to read."""
    opening, body, closing = match.group(1), match.group(2), match.group(3)
    joined = opening + ", ".join(item.strip() for item in body.split(",")) + closing
    return joined if len(joined) <= 96 else match.group(0)


def to_json(metrics: dict[str, Any]) -> str:
    """Indented JSON with flat lists and objects (a confusion matrix row, one class's scores)
    on one line each, so a 10x10 matrix reads as a matrix instead of 100 lines.

    Safe as a regex because no key or value here contains brackets, braces or commas.
    """
    text = re.sub(r"([\[{])([^\[\]{}]+)([\]}])", _one_line, json.dumps(metrics, indent=2))
    if json.loads(text) != metrics:
        raise AssertionError("to_json changed the metrics while reformatting them")
    return text


def import_evaluate_uci() -> ModuleType:
    """training.evaluate_uci, checked before training so a missing dependency fails fast."""
    try:
        import sklearn  # noqa: F401  (evaluate_uci imports it only when it loads the digits)

        from training import evaluate_uci
    except ImportError as error:
        raise SystemExit(
            f"the UCI check cannot run ({error}): it needs scikit-learn and an importable "
            "training.evaluate_uci (dlops' image pipeline); --skip-uci leaves it out"
        ) from error
    return evaluate_uci


def main() -> None:
    parser = training_parser(__doc__.splitlines()[0], Path("models/digits_10.onnx"))
    parser.add_argument(
        "--skip-uci",
        action="store_true",
        help="leave the UCI digits check (needs scikit-learn) out of the metrics",
    )
    args = parser.parse_args()
    evaluate_uci = None if args.skip_uci else import_evaluate_uci()

    model, splits = start_run(args.seed, DigitClassifier)

    started = time.perf_counter()
    train(model, splits["train"], splits["val"], args.epochs, args.seed)
    training_seconds = time.perf_counter() - started

    test_images = torch.from_numpy(splits["test"].images)
    val_images = torch.from_numpy(splits["val"].images)
    metrics: dict[str, Any] = {
        "labels": list(LABELS),
        "test": multiclass_metrics(splits["test"].digits, predict_logits(model, test_images)),
        "val": multiclass_metrics(splits["val"].digits, predict_logits(model, val_images)),
        "noise": noise_check(model, args.seed),
    }
    noisy = {kind: p for kind, p in metrics["noise"].items() if p >= NOISE_MAX_CONFIDENCE}
    if noisy:
        print(to_json(metrics))
        raise SystemExit(f"not exported: synthetic noise reads as a confident digit: {noisy}")

    export_onnx(model, args.out, output_name=OUTPUT_NAME)
    add_metadata(args.out)
    max_diff = verify_onnx(model, args.out, test_images)
    if evaluate_uci is not None:
        metrics["uci"] = {
            f"side_{side}": uci_metrics(evaluate_uci, args.out, side) for side in UCI_SIDES
        }
    metrics |= {
        "seed": args.seed,
        "epochs": args.epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "onnx_max_abs_logit_diff": float(f"{max_diff:.2e}"),
        "training_seconds": round(training_seconds, 1),
    }
    print(to_json(metrics))
    metrics_path = args.out.with_suffix(".metrics.json")
    metrics_path.write_text(to_json(metrics) + "\n")
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, "
        f"onnxruntime max |logit diff| {max_diff:.2e}) and {metrics_path}"
    )


if __name__ == "__main__":
    main()
