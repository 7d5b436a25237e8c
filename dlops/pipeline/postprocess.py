"""The model's raw output to probabilities and answers, as the model's spec says.

A binary model (one output unit) answers ``{"proba": P(positive), "label": ...}``, the seed app's
contract. A K-class model answers ``{"label": top-1, "proba": its probability, "top_k": [...]}``.
A multi-label model (K independent labels) answers ``{"labels": [...], "threshold": t,
"top_k": [...]}``: every label at or above the threshold, best first, with its probability.
No serving framework here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dlops.model.spec import PostprocessSpec

# exp() of a logit beyond this overflows; the probability is 0 or 1 there anyway.
LOGIT_LIMIT = 60.0


def sigmoid(logit: float) -> float:
    # Plain floats: for one image math.exp is several times cheaper than a numpy round trip.
    return 1.0 / (1.0 + math.exp(-min(max(logit, -LOGIT_LIMIT), LOGIT_LIMIT)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, stable for any finite logits."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Postprocessor:
    def __init__(self, spec: PostprocessSpec) -> None:
        self.spec = spec
        self.labels = spec.labels
        self.classes = spec.classes

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs [N, K] -> float64 probabilities [N, K] (P(positive) [N, 1] if binary)."""
        rows = np.asarray(raw).reshape(len(raw), self.classes)
        if self.spec.activation == "softmax":
            return softmax(rows)
        if self.spec.activation == "sigmoid":
            if self.spec.is_multi_label:
                values = np.clip(rows.astype(np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)
                return 1.0 / (1.0 + np.exp(-values))
            logits = rows[:, 0].tolist()
            return np.fromiter(map(sigmoid, logits), np.float64, len(logits)).reshape(-1, 1)
        # Already probabilities; clipped so that rounding in the graph cannot leave 0..1.
        return np.clip(rows.astype(np.float64), 0.0, 1.0)

    def top_k(self, requested: int | None) -> int:
        """How many classes an answer lists: the spec's default, ``0`` for all, capped at K."""
        if requested is None:
            return min(self.spec.top_k, self.classes)
        return self.classes if requested == 0 else min(requested, self.classes)

    def label_of(self, row: np.ndarray) -> str:
        """The answered label: thresholded if binary, the labels at or above the threshold joined
        by ", " if multi-label (empty when none is), else the top-1 class."""
        if self.spec.is_binary:
            return self.binary_label(float(row[0]))
        if self.spec.is_multi_label:
            return ", ".join(self.labels_above(row))
        return self.labels[int(np.argmax(row))]

    def labels_above(self, row: np.ndarray) -> list[str]:
        """Multi-label: the labels at or above the threshold, the most probable first."""
        return [entry["label"] for entry in self._above(row)]

    def _above(self, row: np.ndarray) -> list[dict[str, Any]]:
        assert self.spec.threshold is not None
        ranked = self.ranked(row, self.classes)
        return [entry for entry in ranked if entry["proba"] >= self.spec.threshold]

    def binary_label(self, proba: float) -> str:
        assert self.spec.threshold is not None
        return self.labels[1] if proba > self.spec.threshold else self.labels[0]

    def answer(self, row: np.ndarray, top_k: int | None = None) -> dict[str, Any]:
        if self.spec.is_binary:
            proba = float(row[0])
            return {"proba": proba, "label": self.binary_label(proba)}
        ranked = self.ranked(row, self.top_k(top_k))
        if self.spec.is_multi_label:
            return {"labels": self._above(row), "threshold": self.spec.threshold, "top_k": ranked}
        best = ranked[0]
        return {"label": best["label"], "proba": best["proba"], "top_k": ranked}

    def ranked(self, row: np.ndarray, count: int) -> list[dict[str, Any]]:
        """The ``count`` most probable classes, best first; ties keep the lower index first."""
        order = np.argsort(-row, kind="stable")[:count]
        return [
            {"label": self.labels[index], "index": index, "proba": float(row[index])}
            for index in order.tolist()
        ]

    def classes_as_binary(self, row: np.ndarray) -> np.ndarray:
        """A binary answer as two classes (0: negative, 1: positive), for class rankings."""
        return np.array([1.0 - float(row[0]), float(row[0])]) if self.spec.is_binary else row
