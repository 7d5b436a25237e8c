"""The lowest and the highest layers of the preprocessing: presets, what the graph implies, the
flags; and the final decision of the steps, from a source that gives them or from today's modes
(``digit``, ``resize-crop``, ``resize``), which are presets that expand to steps."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from dlops.model.resolve.common import Fields, Finding, ImportRefused
from dlops.model.resolve.graph import Input
from dlops.model.spec import COLORS, PreprocessSpec
from dlops.model.steps import INTERPOLATIONS, RESAMPLINGS, Crop, Digit, Resize, Step, describe_steps

PRESETS = ("imagenet", "digit")
MODES = ("digit", "resize-crop", "resize")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's default crop_pct: resize to floor(size / 0.875) (256 for 224), then centre-crop.
CROP_PCT = 0.875
# A one-channel square input up to this side is taken for a digit (MNIST-style) model.
DIGIT_MAX_SIDE = 64
PREPROCESS_FLAGS = (
    "--preset, --mode, --resize, --interpolation, --resampling, --color, --scale, --mean, --std, "
    "or a <model>.preprocess.json"
)


def preset_layer(fields: Fields, preset_flag: str | None, source: Input) -> tuple[str, str]:
    """The preset's values, the lowest layer; returns the preset and its source."""
    if preset_flag is not None:
        if preset_flag not in PRESETS:
            raise ImportRefused(f"--preset {preset_flag} is not one of {', '.join(PRESETS)}")
        preset, label = preset_flag, "flag --preset"
    elif source.channels == 1 and source.height == source.width <= DIGIT_MAX_SIDE:
        preset, label = "digit", f"preset digit (one channel, {source.height}x{source.width})"
    elif source.channels == 3:
        preset, label = "imagenet", "preset imagenet (assumed)"
    else:
        preset, label = "imagenet", "preset imagenet, grayscale (assumed)"
    channels = source.channels
    fields.set("preprocess.resampling", "pillow", label)
    if preset == "digit":
        fields.set("preprocess.mode", "digit", label)
        fields.set("preprocess.color", "L", label)
        fields.set("preprocess.resize", None, label)
        fields.set("preprocess.interpolation", "lanczos", label)
        fields.set("preprocess.scale", 1 / 255, label)
        fields.set("preprocess.mean", (0.0,) * channels, label)
        fields.set("preprocess.std", (1.0,) * channels, label)
        return preset, label
    gray = channels == 1
    fields.set("preprocess.mode", "resize-crop", label)
    fields.set("preprocess.color", "L" if gray else "RGB", label)
    fields.set("preprocess.resize", None, label)  # from the crop size, once the mode is final
    fields.set("preprocess.interpolation", "bilinear", label)
    fields.set("preprocess.scale", 1 / 255, label)
    fields.set("preprocess.mean", (0.0,) if gray else IMAGENET_MEAN, label)
    fields.set("preprocess.std", (1.0,) if gray else IMAGENET_STD, label)
    return preset, label


def graph_layer(fields: Fields, source: Input, preset: str, notes: list[str]) -> None:
    if source.channels == 1:
        fields.set("preprocess.color", "L", "graph (one channel)")
    if source.dtype == "uint8":
        if preset == "imagenet":
            notes.append(
                "the input is uint8, so the ImageNet /255 and mean/std do not apply: pixels reach "
                "the graph as 0..255 (it must normalise them itself)"
            )
        label = "graph (uint8 input: pixels as they are)"
        fields.set("preprocess.scale", 1.0, label)
        fields.set("preprocess.mean", (0.0,) * source.channels, label)
        fields.set("preprocess.std", (1.0,) * source.channels, label)


def apply_finding(fields: Fields, finding: Finding, source: Input, notes: list[str]) -> None:
    """A source's say, over the layers below it, field by field."""
    label = finding.source
    if finding.steps is not None:
        fields.set("preprocess.steps", finding.steps, label)
    for name in ("color", "interpolation", "resampling"):
        value = getattr(finding, name)
        if value is not None:
            fields.set(f"preprocess.{name}", value, label)
    if finding.color == "L" and source.channels == 3:
        raise ImportRefused(f"{label} says grayscale (L), but the input has 3 channels")
    normalisation = finding.normalisation()
    if normalisation:
        set_normalisation(fields, source, normalisation, label, notes)
    notes.extend(finding.notes)


def set_normalisation(
    fields: Fields, source: Input, values: dict[str, Any], label: str, notes: list[str]
) -> None:
    """Scale/mean/std from metadata or a sidecar; skipped, with a note, for a uint8 input."""
    if source.dtype == "uint8":
        identity = (
            values.get("scale", 1.0) == 1.0
            and not any(np.atleast_1d(values.get("mean", 0.0)))
            and all(std == 1.0 for std in np.atleast_1d(values.get("std", 1.0)))
        )
        if not identity:
            notes.append(
                f"{label} rescales or normalises pixels, but the input is uint8: pixels reach the "
                "graph as they are, so that was not applied"
            )
        return
    for key, value in values.items():
        fields.set(f"preprocess.{key}", value, label)


def flag_layer(fields: Fields, flags: dict[str, Any]) -> None:
    """``flags``: the preprocessing flags by name, None where not given."""
    for name, allowed in (
        ("mode", MODES),
        ("interpolation", INTERPOLATIONS),
        ("resampling", RESAMPLINGS),
        ("color", COLORS),
    ):
        value = flags[name]
        if value is not None:
            if value not in allowed:
                raise ImportRefused(f"--{name} {value} is not one of {', '.join(allowed)}")
            fields.set(f"preprocess.{name}", value, f"flag --{name}")
    for name in ("resize", "scale", "mean", "std"):
        value = flags[name]
        if value is not None:
            fields.set(f"preprocess.{name}", value, f"flag --{name}")


def finish_preprocess(fields: Fields, flags: dict[str, Any], source: Input) -> PreprocessSpec:
    """The preprocessing; its steps' source is left in ``fields.sources["preprocess.steps"]``."""
    geometry_flags = flags["mode"] is not None or flags["resize"] is not None
    if "preprocess.steps" in fields and not geometry_flags:
        steps, steps_source = _given_steps(fields, flags)
    else:
        steps, steps_source = _expanded_steps(fields, flags, source)
    fields.set("preprocess.steps", steps, steps_source)
    for name in ("mean", "std"):
        values = tuple(float(value) for value in fields[f"preprocess.{name}"])
        if len(values) == 1:
            values *= source.channels
        fields.set(f"preprocess.{name}", values, fields.sources[f"preprocess.{name}"])
    for stale in ("mode", "resize", "interpolation", "resampling"):
        fields.sources.pop(f"preprocess.{stale}", None)
    return PreprocessSpec(
        color=fields["preprocess.color"],
        steps=steps,
        scale=float(fields["preprocess.scale"]),
        mean=fields["preprocess.mean"],
        std=fields["preprocess.std"],
    )


def _given_steps(fields: Fields, flags: dict[str, Any]) -> tuple[tuple[Step, ...], str]:
    """A source's steps, with --interpolation and --resampling applied to every resize."""
    steps: tuple[Step, ...] = fields["preprocess.steps"]
    sources = [fields.sources["preprocess.steps"]]
    changes = {name: flags[name] for name in ("interpolation", "resampling") if flags[name]}
    if changes:
        steps = tuple(replace(s, **changes) if isinstance(s, Resize) else s for s in steps)
        sources += [f"flag --{name}" for name in changes]
    return steps, "; ".join(sources)


def _expanded_steps(
    fields: Fields, flags: dict[str, Any], source: Input
) -> tuple[tuple[Step, ...], str]:
    """Today's modes as steps: digit; resize (stretch); resize-crop (shorter side, centre crop)."""
    mode = fields["preprocess.mode"]
    used = ["mode"]
    height, width = source.height, source.width
    interpolation, resampling = fields["preprocess.interpolation"], fields["preprocess.resampling"]
    steps: tuple[Step, ...]
    if mode != "resize-crop" and flags["resize"] is not None:
        raise ImportRefused(f"--resize applies to --mode resize-crop; the mode is {mode}")
    if mode == "digit":
        steps = (Digit(height),)
    else:
        used += ["interpolation", "resampling"]
        if mode == "resize":
            steps = (Resize("exact", height, width, interpolation, resampling),)
        else:
            # cv2-based pipelines floor a crop's offset; torchvision rounds it.
            crop = Crop(height, width, "floor" if resampling == "opencv" else "round")
            resize = fields["preprocess.resize"]
            if resize is not None:
                used.append("resize")
                if resize < max(height, width):
                    raise ImportRefused(
                        f"resize-crop resizes the shorter side to {resize}, which must be at "
                        f"least the crop of {height}x{width}"
                    )
                steps = (Resize("shorter", resize, resize, interpolation, resampling), crop)
            elif height == width:
                side = math.floor(height / CROP_PCT)
                steps = (Resize("shorter", side, side, interpolation, resampling), crop)
            else:
                # timm's rule for a non-square input: each side to floor(side / crop_pct), then
                # the centre crop: the picture is stretched a little, never mostly cropped away.
                scaled = (math.floor(height / CROP_PCT), math.floor(width / CROP_PCT))
                steps = (Resize("exact", *scaled, interpolation, resampling), crop)
    sources: list[str] = []
    for name in used:
        where = fields.sources[f"preprocess.{name}"]
        if where not in sources:
            sources.append(where)
    return steps, "; ".join(sources)


def assumed_note(fields: Fields, pre: PreprocessSpec, source: Input) -> str | None:
    """Which of the ImageNet defaults were taken only because nothing else said otherwise."""
    # The steps' first source is the mode's (or the source that gave them whole).
    assumed = {
        name.split(".")[1]
        for name, where in fields.sources.items()
        if name.startswith("preprocess.") and where.split("; ")[0].endswith("(assumed)")
    }
    parts: list[str] = []
    if "steps" in assumed and not pre.is_digit:
        parts.append(describe_steps(pre.steps))
    if "scale" in assumed:
        parts.append(f"/{round(1 / pre.scale):g}" if pre.scale < 1 else f"scale {pre.scale:g}")
    if {"mean", "std"} & assumed:
        if pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD:
            parts.append("ImageNet mean/std")
        else:
            mean = ", ".join(f"{value:g}" for value in pre.mean)
            std = ", ".join(f"{value:g}" for value in pre.std)
            parts.append(f"mean {mean}, std {std}")
    if "color" in assumed:
        parts.append(pre.color)
    if not parts:
        return None
    everything = {"steps", "scale", "mean", "std", "color"} <= assumed
    color = {"L": "grayscale"}.get(pre.color, pre.color)
    opening = (
        f"nothing said how to preprocess this {source.dtype} {color} input, so the ImageNet "
        "defaults were assumed"
        if everything or (source.dtype == "uint8" and "steps" in assumed)
        else f"the ImageNet defaults were assumed where nothing else said for this {source.dtype} "
        f"{color} input"
    )
    return (
        f"{opening} ({'; '.join(parts)}); change them with {PREPROCESS_FLAGS}; to be sure, "
        "import with --expect answers.json (the probabilities your own pipeline gives)"
    )
