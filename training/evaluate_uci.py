"""Score the served pipeline on digits from another source: the UCI 8x8 digits in scikit-learn.

    pip install scikit-learn && python -m training.evaluate_uci
    pip install scikit-learn && python -m training.evaluate_uci --digits10

scikit-learn ships the 1797 handwritten digits of the UCI ML repository (8x8, 16 grey levels,
written by other people and scanned another way than MNIST). Each is scaled up, encoded as a PNG and
sent through ``dlops.pipeline.preprocess.digit.to_model_input`` and the model, as an upload would
be. Nothing here is used for training or tuning; it is a check of generalisation.

``--digits10`` scores the 10-digit classifier ``models/digits_10.onnx`` instead of the "is it
a 3?" one; ``training/train_digits10.py`` also calls ``uci_digits10_logits`` to put the same
check in that model's metrics.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from dlops.pipeline.decode import ImageError
from dlops.pipeline.inference import open_session
from dlops.pipeline.postprocess import sigmoid
from dlops.pipeline.preprocess.digit import to_model_input

MODEL = "models/binary_classifier_3.onnx"
DIGITS10_MODEL = "models/digits_10.onnx"


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    higher = (scores[positive][:, None] > scores[~positive][None, :]).mean()
    ties = (scores[positive][:, None] == scores[~positive][None, :]).mean()
    return float(higher + ties / 2)


def as_png(digit: np.ndarray, side: int) -> bytes:
    image = Image.fromarray(np.rint(digit / 16 * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.resize((side, side), Image.Resampling.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


def uci_model_inputs(side: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The UCI digits as the service sees them, each upscaled to a side x side PNG first.

    Returns the readable ones as uint8 [M, 28, 28], their digits [M], and how many the
    pipeline rejected: a 10-class model has no neutral answer to give those, so they are
    left out rather than scored.
    """
    from sklearn.datasets import load_digits

    uci = load_digits()
    images, digits, unreadable = [], [], 0
    for pixels, digit in zip(uci.images, uci.target, strict=True):
        try:
            images.append(to_model_input(as_png(pixels, side)))
        except ImageError:
            unreadable += 1
            continue
        digits.append(digit)
    return np.stack(images), np.array(digits, dtype=np.int64), unreadable


def uci_digits10_logits(model: str, side: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(digits [M], float32 logits [M, 10], unreadable count) of the 10-digit model on UCI."""
    # onnxruntime directly: the service's classifier wrapper reads one logit per image.
    import onnxruntime as ort

    images, digits, unreadable = uci_model_inputs(side)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": images})
    return digits, np.asarray(logits), unreadable


def print_digits10(model: str, side: int) -> None:
    digits, logits, unreadable = uci_digits10_logits(model, side)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (digits, logits.argmax(axis=1)), 1)
    correct = np.diag(confusion)
    recall = correct / np.maximum(confusion.sum(axis=1), 1)
    precision = correct / np.maximum(confusion.sum(axis=0), 1)
    print(
        f"{model} on UCI digits at {side}x{side}: n={len(digits)} "
        f"accuracy={correct.sum() / len(digits):.4f} unreadable={unreadable}"
    )
    print("digit      " + " ".join(f"{digit:>5d}" for digit in range(10)))
    print("precision  " + " ".join(f"{value:5.3f}" for value in precision))
    print("recall     " + " ".join(f"{value:5.3f}" for value in recall))
    print("confusion matrix (rows: true digit, columns: predicted):")
    for digit, row in enumerate(confusion):
        print(f"{digit:>10d} " + " ".join(f"{count:5d}" for count in row))


def main() -> None:
    from sklearn.datasets import load_digits

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=32, help="upscaled size in pixels")
    parser.add_argument(
        "--digits10", action="store_true", help=f"score {DIGITS10_MODEL} (10 digits) instead"
    )
    args = parser.parse_args()
    if args.digits10:
        print_digits10(DIGITS10_MODEL, args.side)
        return
    session = open_session(MODEL)
    digits = load_digits()
    probabilities, unreadable = [], 0
    for digit in digits.images:
        try:
            pixels = to_model_input(as_png(digit, args.side))
        except ImageError:
            unreadable += 1
            probabilities.append(0.0)
            continue
        (logit,) = session.run(None, {"input": pixels[None]})[0].reshape(-1).tolist()
        probabilities.append(sigmoid(logit))
    scores, is_three = np.array(probabilities), digits.target == 3
    predicted = scores > 0.5
    tp, fp = int((predicted & is_three).sum()), int((predicted & ~is_three).sum())
    fn = int((~predicted & is_three).sum())
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    print(
        f"UCI digits at {args.side}x{args.side}: n={len(scores)} threes={int(is_three.sum())} "
        f"precision={precision:.3f} recall={recall:.3f} F1={f1:.3f} "
        f"ROC AUC={roc_auc(scores, is_three):.4f} unreadable={unreadable}"
    )
    print(
        "false positives by digit:", np.bincount(digits.target[predicted & ~is_three], minlength=10)
    )


if __name__ == "__main__":
    main()
