"""Score the served pipeline on digits from another source: the UCI 8x8 digits in scikit-learn.

    pip install scikit-learn && python -m training.evaluate_uci

scikit-learn ships the 1797 handwritten digits of the UCI ML repository (8x8, 16 grey levels,
written by other people and scanned another way than MNIST). Each is scaled up, encoded as a
PNG and sent through ``dlops.imaging.to_model_input`` and the model, as an upload would be.
Nothing here is used for training or tuning; it is a check of generalisation.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from dlops.imaging import ImageError, to_model_input
from dlops.inference import BinaryImageClassifier

MODEL = "models/binary_classifier_3.onnx"


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


def main() -> None:
    from sklearn.datasets import load_digits

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=32, help="upscaled size in pixels")
    args = parser.parse_args()
    classifier = BinaryImageClassifier(MODEL, 0.5, ("no 3", "3"))
    digits = load_digits()
    probabilities, unreadable = [], 0
    for digit in digits.images:
        try:
            pixels = to_model_input(as_png(digit, args.side))
        except ImageError:
            unreadable += 1
            probabilities.append(0.0)
            continue
        probabilities.append(classifier.predict(pixels[None])[0].proba)
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
