"""Decide a model's spec at import time, from the graph, what sits beside it and the flags.

Layers, lowest first, each later one overriding field by field: a preset, what the graph implies
(one channel, uint8, converted from Paddle), ONNX ``metadata_props``, the exporters' own files
(:data:`EXPORTERS`, one module each), the user's ``<model>.preprocess.json`` (or
``--preprocess FILE``), command-line flags. Every value records its source; what could not be
decided is refused with :class:`ImportRefused`. Used by import_model.py only (it needs onnx and
onnxruntime, which the service does not).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from dlops.model.resolve import huggingface, onnx_metadata, paddle, sidecar, timm, ultralytics
from dlops.model.resolve.common import Fields, Finding, ImportRefused, describe
from dlops.model.resolve.graph import (
    InputHints,
    activation,
    choose_output,
    final_op,
    load_model,
    trial,
)
from dlops.model.resolve.graph import resolve_input as _resolve_input
from dlops.model.resolve.labels import resolve_labels
from dlops.model.resolve.presets import (
    PREPROCESS_FLAGS,
    PRESETS,
    apply_finding,
    assumed_note,
    finish_preprocess,
    flag_layer,
    graph_layer,
    preset_layer,
)
from dlops.model.spec import (
    ACTIVATIONS,
    DEFAULT_TOP_K,
    ModelSpec,
    PostprocessSpec,
    SpecError,
    validate,
)

__all__ = [
    "PRESETS",
    "ImportRefused",
    "Overrides",
    "Resolution",
    "describe",
    "parse_number",
    "parse_numbers",
    "parse_size",
    "resolve_spec",
]

DEFAULT_THRESHOLD = 0.5
# The exporters' files beside a model, lowest precedence first: each reads what its exporter
# writes and says what it found. Adding an exporter's format is adding one module here.
Exporter = Callable[[Path, onnx.ModelProto], Finding | list[Finding] | None]
EXPORTERS: list[Exporter] = [
    lambda path, model: ultralytics.read(model),
    lambda path, model: paddle.read(path),
    lambda path, model: timm.read(path),
    lambda path, model: huggingface.read(path),
]


@dataclass(frozen=True)
class Overrides:
    """The command line's say: None for every flag that was not given."""

    layout: str | None = None  # NCHW | NHWC | NHW
    size: tuple[int, int] | None = None  # (height, width), for a dynamic H/W
    output: str | None = None
    activation: str | None = None
    labels: str | None = None  # "a,b,c", or "@path": a file with one label per line
    threshold: float | None = None
    top_k: int | None = None
    multi_label: bool | None = None  # True: independent labels, each against the threshold
    preset: str | None = None  # imagenet | digit
    preprocess: Path | None = None  # a pipeline in dlops/model/steps.py's vocabulary
    mode: str | None = None
    resize: int | None = None
    interpolation: str | None = None
    resampling: str | None = None  # pillow | opencv
    color: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


PREPROCESS_FLAG_NAMES = (
    "mode",
    "resize",
    "interpolation",
    "resampling",
    "color",
    "scale",
    "mean",
    "std",
)


@dataclass(frozen=True)
class Resolution:
    spec: ModelSpec  # its ``sources`` say where each value came from
    notes: tuple[str, ...]  # assumptions made, and which flags change them
    input_shape: tuple[str, ...]  # the input's shape as the graph declares it
    # The graph's external data files, relative to its folder (stored with it).
    external_data: tuple[str, ...] = ()


# --- command-line values (the CLI turns ValueError into a usage error) -------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``N`` (square) or ``HxW`` as (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers, default=0) <= 0:
        raise ValueError(f"expected N or HxW in pixels (e.g. 224 or 384x288), got {text!r}")
    return (numbers[0], numbers[-1])


def parse_number(text: str) -> float:
    """A finite number, or a fraction such as ``1/255``."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            value = float(numerator) / float(denominator)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"expected a number such as 0.5 or 1/255, got {text!r}")
    return value


def parse_numbers(text: str) -> tuple[float, ...]:
    """One number for every channel, or one per channel: ``0.5`` or ``0.485,0.456,0.406``."""
    return tuple(parse_number(part.strip()) for part in text.split(","))


# --- the whole spec ------------------------------------------------------------------------------


def _findings(path: Path, model: onnx.ModelProto, overrides: Overrides) -> list[Finding]:
    """What the sources beside the graph say, lowest precedence first (before the graph's own
    implications, which need the input resolved first)."""
    findings = onnx_metadata.read(model)
    for read in EXPORTERS:
        found = read(path, model)
        findings += found if isinstance(found, list) else [found] if found is not None else []
    user_file = sidecar.find(path, overrides.preprocess)
    if user_file is not None:
        findings.append(sidecar.read(user_file))
    return findings


def _hints(findings: list[Finding]) -> InputHints:
    """The highest source's word on the channels and the size, for symbolic dimensions."""
    hints = InputHints()
    for found in findings:
        if found.channels is not None:
            hints = InputHints(found.channels, found.source, hints.size, hints.size_source)
        if found.size is not None:
            hints = InputHints(hints.channels, hints.channels_source, found.size, found.source)
    return hints


def resolve_spec(path: Path, overrides: Overrides | None = None) -> Resolution:
    """The spec dlops would serve ``path`` with; ImportRefused for what it cannot serve."""
    overrides = overrides or Overrides()
    model, external_data = load_model(path)
    graph = model.graph
    notes: list[str] = []
    findings = _findings(path, model, overrides)
    source = _resolve_input(graph, overrides.layout, overrides.size, _hints(findings), notes)
    output = choose_output(graph, overrides.output)
    classes, max_batch, max_batch_source = trial(path, source, output, notes)
    source.max_batch = max_batch
    sources = dict(source.sources)
    sources["input.max_batch"] = max_batch_source
    sources["postprocess.output"] = "flag --output" if overrides.output else "graph"
    sources["postprocess.classes"] = "trial run"

    task, task_source = _task(graph, output, classes, overrides, findings)
    sources["postprocess.task"] = task_source
    if overrides.activation is not None:
        if overrides.activation not in ACTIVATIONS:
            raise ImportRefused(
                f"--activation {overrides.activation} is not one of {', '.join(ACTIVATIONS)}"
            )
        chosen, activation_source = overrides.activation, "flag --activation"
    else:
        chosen, activation_source = activation(graph, output, classes)
        if task == "multi" and chosen == "softmax":
            chosen, activation_source = "sigmoid", "default (multi-label: independent logits)"
        if activation_source.startswith("default"):
            what = (
                "logits (sigmoid applied to each)"
                if chosen == "sigmoid" and classes > 1
                else "a logit (sigmoid applied)"
                if classes == 1
                else "logits (softmax applied)"
            )
            notes.append(
                f"the graph does not end in Softmax or Sigmoid, so its output was taken as {what}; "
                "pass --activation none if it already gives probabilities"
            )
    sources["postprocess.activation"] = activation_source

    labels, labels_source = resolve_labels(path, model, overrides.labels, classes, notes)
    sources["postprocess.labels"] = labels_source
    threshold: float | None = None
    if classes == 1 or task == "multi":
        threshold = DEFAULT_THRESHOLD if overrides.threshold is None else overrides.threshold
        sources["postprocess.threshold"] = (
            "default" if overrides.threshold is None else "flag --threshold"
        )
    else:
        if overrides.threshold is not None:
            raise ImportRefused(
                f"--threshold is for binary and multi-label models; this model has {classes} "
                "classes, one per image (pass --multi-label if its labels are independent)"
            )
        sources["postprocess.threshold"] = "multi-class model"
    if classes == 1:
        top_k, sources["postprocess.top_k"] = 1, "binary model"
    elif overrides.top_k is None:
        top_k, sources["postprocess.top_k"] = min(DEFAULT_TOP_K, classes), "default"
    else:
        top_k, sources["postprocess.top_k"] = min(overrides.top_k, classes), "flag --top-k"
        if overrides.top_k > classes:
            notes.append(f"--top-k {overrides.top_k} was capped at the {classes} classes")

    fields = Fields()
    preset, preset_source = preset_layer(fields, overrides.preset, source)
    graph_layer(fields, source, preset, notes)
    provenance = paddle.provenance(model, source.channels)
    for found in ([provenance] if provenance is not None else []) + findings:
        apply_finding(fields, found, source, notes)
    flags = {name: getattr(overrides, name) for name in PREPROCESS_FLAG_NAMES}
    flag_layer(fields, flags)
    pre = finish_preprocess(fields, flags, source)
    if provenance is not None:
        note = paddle.provenance_note(
            fields.sources["preprocess.color"] == provenance.source,
            provenance.source in fields.sources["preprocess.steps"],
        )
        if note is not None:
            notes.append(note)
    if preset == "digit":
        if fields.sources["preprocess.steps"] == preset_source and overrides.preset is None:
            notes.append(
                f"the input is one channel of {source.height}x{source.width}, so the digit "
                "preprocessing was assumed (MNIST-style: ink found on any background, fitted and "
                f"centred by mass); change it with {PREPROCESS_FLAGS}"
            )
        if fields.sources["preprocess.scale"] == preset_source:
            notes.append(
                f"the {source.dtype} input's pixel range is not declared, so /255 (pixels 0..1, "
                "no mean/std) was assumed; change it with --scale, --mean, --std"
            )
    assumed = assumed_note(fields, pre, source)
    if assumed is not None:
        notes.append(assumed)
    sources.update(fields.sources)

    spec = ModelSpec(
        input=source.spec(),
        preprocess=pre,
        postprocess=PostprocessSpec(
            output=output,
            classes=classes,
            activation=chosen,
            labels=labels,
            threshold=threshold,
            top_k=top_k,
            task=task,
        ),
        sources=sources,
    )
    try:
        validate(spec)
    except SpecError as error:
        raise ImportRefused(
            f"cannot be served as resolved: {error} (steps from {sources['preprocess.steps']})"
            if "preprocess.steps" in str(error)
            else f"cannot be served as resolved: {error}"
        ) from None
    return Resolution(
        spec, tuple(notes), tuple(str(dim) for dim in source.dims), tuple(external_data)
    )


def _task(
    graph: onnx.GraphProto,
    output: str,
    classes: int,
    overrides: Overrides,
    findings: list[Finding],
) -> tuple[str, str]:
    """single (one class per image) or multi (independent labels), and why."""
    if overrides.multi_label:
        if classes < 2:
            raise ImportRefused("--multi-label needs two or more output units; this model has one")
        return "multi", "flag --multi-label"
    declared = [found for found in findings if found.task is not None]
    if declared and classes > 1:
        return declared[-1].task or "single", declared[-1].source
    if classes > 1 and final_op(graph, output) == "Sigmoid":
        return "multi", f"graph ({classes} outputs ending in Sigmoid: independent labels)"
    return "single", "binary model" if classes == 1 else "default (one class per image)"
