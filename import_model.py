"""Validate an ONNX image classifier, decide how to serve it, and import it into the model store.

    python import_model.py [PATH] [--name NAME] [--labels "no 3,3"] [--size 224] ...

The spec (input, preprocessing, labels, answer) is resolved by dlops/model/resolve/ from the graph,
ONNX metadata_props, sidecar files beside the model (labels.txt, index_to_name.json, config.json,
preprocessor_config.json, each also as <model>.<name>) and these flags, highest first; it is
printed with the source of every value and stored as spec.json with the model. Importing the
same file with the same spec again is a no-op that prints the existing tag.
"""

from __future__ import annotations

import sys

from dlops.model import import_stamp

# `make serve` runs this on every start. When the stamp (dlops/model/import_stamp.py) shows that
# nothing the import depends on has changed, print what the import printed, before importing
# BentoML, onnx and onnxruntime: ~0.05 s instead of ~0.7 s.
if __name__ == "__main__" and (replay := import_stamp.unchanged(sys.argv[1:])) is not None:
    print("\n".join(replay))
    sys.exit(0)

import argparse
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from dlops import config
from dlops.model.resolve import (
    PRESETS,
    ImportRefused,
    Overrides,
    Resolution,
    describe,
    parse_number,
    parse_numbers,
    parse_size,
    resolve_spec,
)
from dlops.model.resolve.presets import MODES
from dlops.model.spec import (
    ACTIVATIONS,
    COLORS,
    LAYOUTS,
    ModelSpec,
    SpecError,
    load_spec,
    save_spec,
)
from dlops.model.steps import INTERPOLATIONS, RESAMPLINGS, describe_steps
from dlops.model.store import damage, file_sha256
from dlops.pipeline.parity import ParityError, Tolerance, parse_tolerance, read_answers
from dlops.pipeline.parity import check as check_parity

DEFAULT_MODEL_PATH = Path(__file__).parent / "models" / "binary_classifier_3.onnx"
MODEL_CARD_NAME = "MODEL_CARD.md"
# BentoML's rule for a tag's name.
NAME_PATTERN = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
NAME_MAX_LENGTH = 63


def default_name(path: Path) -> str:
    """The file's stem as a valid BentoML model name (lowercase; other characters → "_")."""
    name = re.sub(r"[^a-z0-9_.-]", "_", path.stem.lower())
    name = name[:NAME_MAX_LENGTH].strip("_.-")
    return name or "model"


def model_name(text: str) -> str:
    if len(text) > NAME_MAX_LENGTH or not NAME_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"--name {text!r} is not a valid model name: lowercase letters, digits, '_', '-' and "
            f"'.', starting and ending with a letter or digit, at most {NAME_MAX_LENGTH} long"
        )
    return text


def threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"--threshold must be a number between 0 and 1, got {text!r}"
        )
    return value


def positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number above 0, got {text!r}")
        return value

    return parse


def checked(parse: Callable[[str], Any], flag: str) -> Callable[[str], Any]:
    """An argparse type from one of dlops.model.resolve's parsers (their ValueError names the
    value)."""

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{flag}: {error}") from None

    return wrapped


def positive_number(text: str) -> float:
    value = parse_number(text)
    if value <= 0:
        raise ValueError(f"expected a number above 0, got {text!r}")
    return value


def card_metrics(path: Path) -> dict[str, Any]:
    """The held-out test metrics written by training/train.py, if they sit beside the model."""
    metrics_path = path.with_suffix(".metrics.json")
    if not metrics_path.is_file():
        return {}
    return dict(json.loads(metrics_path.read_text()).get("test", {}))


def build_metadata(path: Path, resolution: Resolution) -> dict[str, Any]:
    """Key fields of the spec mirrored in BentoML's metadata (spec.json is the source of truth),
    and the sha256 of the model file and of each of its external data files (relative to its
    folder, as the graph names them), which the service checks at start-up."""
    spec = resolution.spec
    source, post = spec.input, spec.postprocess
    metadata: dict[str, Any] = {
        "sha256": file_sha256(path),
        "external_data": {
            name: file_sha256(path.parent / name) for name in resolution.external_data
        },
        "source_file": path.name,
        "input_name": source.name,
        "input_dtype": source.dtype,
        "input_shape": list(resolution.input_shape),
        "layout": source.layout,
        "height": source.height,
        "width": source.width,
        "output_name": post.output,
        "classes": post.classes,
        "activation": post.activation,
        "preprocess_steps": describe_steps(spec.preprocess.steps),
        "labels": list(post.labels),
        "metrics": card_metrics(path),
    }
    if source.height == source.width:
        metadata["image_size"] = source.height
    if post.is_binary:
        metadata["threshold"] = post.threshold
    return metadata


def latest_matching(name: str, spec: ModelSpec, sha256: str) -> Any | None:
    """The latest stored version, when it already holds these bytes served this way.

    Only the latest counts: if an older version matched, `:latest` would still serve another
    model, so importing again must make this one the latest. A latest version whose stored file
    was damaged does not count, nor one without a readable spec.json (imported by an older
    release): importing again is how the service's start-up check tells users to repair both.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        latest = bentoml.models.get(f"{name}:latest")
    except NotFound:
        return None
    if latest.info.metadata.get("sha256") != sha256 or damage(latest) is not None:
        return None
    try:
        stored = load_spec(Path(latest.path))
    except SpecError:
        return None
    return latest if stored.identity() == spec.identity() else None


def import_model(path: Path, name: str, resolution: Resolution) -> tuple[str, bool]:
    """Returns the model's tag and whether a new version was created.

    The entry holds the model as model.onnx and, under the names its graph gives them, the
    external data files beside it (graphs over 2 GB keep their weights there). With such files the
    trial run is repeated on that copy before BentoML stores it: an ImportRefused raised inside
    ``bentoml.models.create`` leaves the store untouched.
    """
    import bentoml

    from dlops.model.resolve.graph import trial_stored

    spec = resolution.spec
    external_data = resolution.external_data
    metadata = build_metadata(path, resolution)
    existing = latest_matching(name, spec, metadata["sha256"])
    # latest_matching compares the model file's bytes; its external data must be the same too (an
    # entry of an earlier release records none: it held no external data).
    recorded = None if existing is None else existing.info.metadata.get("external_data", {})
    if existing is not None and recorded == metadata["external_data"]:
        return str(existing.tag), False
    task = "binary-image-classification" if spec.postprocess.is_binary else "image-classification"
    with bentoml.models.create(
        name, labels={"framework": "onnx", "task": task}, metadata=metadata
    ) as model:
        stored = Path(model.path_of(config.MODEL_FILE_NAME))
        shutil.copyfile(path, stored)
        for location in external_data:
            target = stored.parent / location
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.parent / location, target)
        save_spec(spec, Path(model.path))
        card = path.with_name(f"{path.stem}.card.md")
        if card.is_file():
            shutil.copyfile(card, model.path_of(MODEL_CARD_NAME))
        if external_data:  # a model of one file is stored byte for byte as it was tried
            trial_stored(stored, spec)
    return str(model.tag), True


def spec_table(spec: ModelSpec) -> list[str]:
    """Every field of the spec, its value and where the value came from, aligned."""
    rows = [("field", "value", "source")]
    for section in ("input", "preprocess", "postprocess"):
        for key, value in vars(getattr(spec, section)).items():
            dotted = f"{section}.{key}"
            if dotted == "preprocess.steps":
                shown = describe_steps(value)
            elif dotted == "input.max_batch" and value is None:
                shown = "any"
            else:
                shown = describe(value)
            rows.append((dotted, shown, spec.sources.get(dotted, "")))
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip() for row in rows]


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="import_model.py",
        description=__doc__.split("\n\n")[0],
        epilog="Values not given are read from the model and the files beside it, or assumed "
        "(the import says which); a model it cannot serve or decide is refused in one line.",
    )
    cli.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=DEFAULT_MODEL_PATH,
        help="the ONNX file (default: models/binary_classifier_3.onnx)",
    )
    cli.add_argument(
        "--name",
        type=model_name,
        help="model store name (default: the file's name, e.g. binary_classifier_3)",
    )
    graph = cli.add_argument_group("input and output")
    graph.add_argument(
        "--layout", choices=LAYOUTS, help="when dimensions 1 and 3 could both be channels"
    )
    graph.add_argument(
        "--size",
        type=checked(parse_size, "--size"),
        metavar="N|HxW",
        help="the image size, for an input whose height/width are dynamic",
    )
    graph.add_argument(
        "--output", metavar="NAME", help="the scores' output, when there are several"
    )
    answer = cli.add_argument_group("answer")
    answer.add_argument(
        "--labels",
        metavar='"A,B,..."|@FILE',
        help="class names in output order (binary: negative,positive), or @file with one per line",
    )
    answer.add_argument(
        "--threshold",
        type=threshold,
        metavar="P",
        help="binary models: P(positive) above it (default 0.5)",
    )
    answer.add_argument(
        "--top-k", type=positive_int("--top-k"), metavar="N", help="classes per answer (default 5)"
    )
    answer.add_argument(
        "--activation", choices=ACTIVATIONS, help="applied to the output (default: detected)"
    )
    answer.add_argument(
        "--multi-label",
        action="store_true",
        default=None,
        help="independent labels: every one with P >= threshold is answered (default: detected)",
    )
    pre = cli.add_argument_group("preprocessing")
    pre.add_argument("--preset", choices=PRESETS, help="the starting point for the fields below")
    pre.add_argument(
        "--preprocess",
        type=Path,
        metavar="FILE",
        help="the pipeline as steps, in JSON (default: <model>.preprocess.json if present)",
    )
    pre.add_argument(
        "--mode", choices=MODES, help="digit: MNIST-style; resize-crop: shorter side, centre crop"
    )
    pre.add_argument(
        "--resize",
        type=positive_int("--resize"),
        metavar="N",
        help="resize-crop: the shorter side before the centre crop",
    )
    pre.add_argument("--interpolation", choices=INTERPOLATIONS)
    pre.add_argument(
        "--resampling",
        choices=RESAMPLINGS,
        help="pillow: antialiased, torchvision's rules; opencv: as cv2.resize (no antialiasing)",
    )
    pre.add_argument("--color", choices=COLORS, help="the channels' order; L: grayscale")
    pre.add_argument(
        "--scale", type=checked(positive_number, "--scale"), metavar="X", help="e.g. 1/255"
    )
    pre.add_argument(
        "--mean",
        type=checked(parse_numbers, "--mean"),
        metavar="A[,B,C]",
        help="pixel * scale - mean, per channel or one for all",
    )
    pre.add_argument(
        "--std", type=checked(parse_numbers, "--std"), metavar="A[,B,C]", help="... / std"
    )
    parity = cli.add_argument_group("parity with your own pipeline")
    parity.add_argument(
        "--expect",
        type=Path,
        metavar="ANSWERS.json",
        help="images and the probabilities your pipeline gives them: stored only if they agree",
    )
    parity.add_argument(
        "--tolerance",
        type=checked(parse_tolerance, "--tolerance"),
        default=Tolerance(),
        metavar="AGREEMENT,MAX_DELTA",
        help="the least top-1 agreement and the largest |dp| accepted (default 0.99,0.02)",
    )
    return cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    path: Path = args.path
    overrides = Overrides(**{item.name: getattr(args, item.name) for item in fields(Overrides)})
    parity: list[str] = []
    try:
        resolution = resolve_spec(path, overrides)
        if args.expect is not None:
            parity = expect(path, resolution.spec, args.expect, args.tolerance)
        tag, created = import_model(path, args.name or default_name(path), resolution)
    except ImportRefused as refusal:
        print(f"import_model.py: error: {path}: {refusal}", file=sys.stderr)
        return 1
    output = [
        *spec_table(resolution.spec),
        *(f"note: {note}" for note in resolution.notes),
        *parity,
    ]
    print(
        "\n".join([*output, f"{'imported' if created else 'already imported, unchanged'}: {tag}"])
    )
    # What the next run with these arguments prints if nothing changes: the same, as a no-op.
    # Not with --expect: its images may change anywhere, so the check always runs.
    if args.expect is None:
        name = tag.partition(":")[0]
        import_stamp.record(argv, path, name, [*output, f"already imported, unchanged: {tag}"])
    return 0


def expect(path: Path, spec: ModelSpec, answers: Path, tolerance: Tolerance) -> list[str]:
    """The parity check's lines; ImportRefused, with them, when the answers do not agree."""
    try:
        report = check_parity(path, spec, read_answers(answers, spec.postprocess.classes))
    except ParityError as error:
        raise ImportRefused(f"--expect: {error}") from None
    lines = report.lines(tolerance)
    if not report.passes(tolerance):
        details = "; ".join(line.removeprefix("parity:").strip() for line in lines)
        raise ImportRefused(
            f"the stored steps do not reproduce {answers.name}, so nothing was stored: {details}. "
            "Write the pipeline as steps in a <model>.preprocess.json (see docs/models.md) or "
            "loosen --tolerance"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
