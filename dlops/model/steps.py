"""Preprocessing as an ordered list of steps: the vocabulary, as plain data.

A decoded picture is converted to the spec's colour, then each step in turn changes its geometry
(``resize``, ``crop``, ``pad``; or ``digit``, the whole MNIST pipeline on its own), then pixels
become ``(pixel * scale - mean) / std``; a ``pad`` marked ``after_normalize`` pads those values.
The same JSON is stored in ``spec.json``, written in a ``<model>.preprocess.json`` sidecar and
printed by the import. Parsing refuses anything else with the step and the field at fault.
No imaging here: dlops/pipeline/preprocess runs the steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Pillow's resampling filters by the names torchvision, timm and Hugging Face use.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# How a resize samples: "pillow" (antialiased filters) or "opencv" (cv2.resize: no antialiasing),
# the convention of OpenCV-based training pipelines (PaddleOCR, PaddleClas, Ultralytics).
RESAMPLINGS = ("pillow", "opencv")
OPENCV_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
# shorter: the shorter side to size; longer: the longer side to size (aspect kept both);
# exact: stretched to height x width; fit / cover: the aspect kept, scaled to fit inside / to
# cover height x width (timm's ResizeKeepRatio); height: height to size, the width following the
# aspect but at most max_width (PaddleOCR's text lines).
RESIZE_TARGETS = ("shorter", "longer", "exact", "fit", "cover", "height")
BOXED_TARGETS = ("exact", "fit", "cover")  # sized height x width, not by one side
ROUNDINGS = ("floor", "round", "ceil")
OFFSETS = (
    "round",
    "floor",
)  # a centred crop's or pad's offset: torchvision rounds, cv2 code floors
POSITIONS = ("center", "top-left")
# Picture sizes every pipeline is tried on at import: it must end at the input's size for each.
PROBE_SIZES = ((640, 480), (480, 640), (224, 224), (1000, 100), (100, 1000), (33, 17), (1, 1))


class StepError(ValueError):
    """A step that cannot be run: the message names the step and what was expected."""


@dataclass(frozen=True)
class Resize:
    to: str  # one of RESIZE_TARGETS
    height: int  # shorter, longer and height: the side's size (width = height)
    width: int
    interpolation: str = "bilinear"
    resampling: str = "pillow"
    # How the side that follows the aspect is rounded; None: int() for pillow (torchvision),
    # round() for opencv (cv2-based code), ceil for ``height`` (PaddleOCR).
    rounding: str | None = None
    max_width: int | None = None  # ``height`` only

    @property
    def antialiases(self) -> bool:
        """Pillow's filters widen with the scale when they shrink; cv2's and nearest do not."""
        return self.resampling == "pillow" and self.interpolation != "nearest"

    @property
    def rounding_rule(self) -> str:
        if self.rounding is not None:
            return self.rounding
        if self.to == "height":
            return "ceil"
        return "round" if self.resampling == "opencv" else "floor"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after this step for a (width, height) picture."""
        if self.to == "exact":
            return self.width, self.height
        rounded = _ROUND[self.rounding_rule]
        if self.to in ("fit", "cover"):
            ratios = (height / self.height, width / self.width)
            ratio = max(ratios) if self.to == "fit" else min(ratios)
            return max(1, rounded(width / ratio)), max(1, rounded(height / ratio))
        if self.to == "height":
            new_width = self._follow(width, height)
            return min(new_width, self.max_width or new_width), self.height
        shorter_is_width = width <= height
        if self.to == "longer":
            shorter_is_width = not shorter_is_width
        if shorter_is_width:
            return self.height, self._follow(height, width)
        return self._follow(width, height), self.height

    def _follow(self, other: int, sized: int) -> int:
        """The side that follows the aspect when the ``sized`` side becomes ``self.height``,
        in the arithmetic of the convention each rounding stands for, so that ties fall the same
        way: torchvision ``int(size * long / short)``, cv2-based code (PaddleClas)
        ``round(long * (size / short))``, PaddleOCR ``ceil(size * (w / h))``."""
        rule, side = self.rounding_rule, self.height
        if rule == "floor":
            value = math.floor(side * other / sized)
        elif rule == "round":
            value = round(other * (side / sized))
        else:
            value = math.ceil(side * (other / sized))
        return max(1, value)

    def describe(self) -> str:
        if self.to == "exact":
            what = f"resize to {self.height}x{self.width} (stretch)"
        elif self.to in ("fit", "cover"):
            what = f"resize to {self.to} {self.height}x{self.width} (aspect kept)"
        elif self.to == "height":
            what = f"resize height to {self.height}, width by aspect up to {self.max_width}"
        else:
            what = f"resize {self.to} side to {self.height}"
        rounding = f", {self.rounding}" if self.rounding else ""
        return f"{what} ({self.interpolation}, {self.resampling}{rounding})"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": "resize", "to": self.to}
        data["size"] = [self.height, self.width] if self.to in BOXED_TARGETS else self.height
        if self.max_width is not None:
            data["max_width"] = self.max_width
        data.update(interpolation=self.interpolation, resampling=self.resampling)
        if self.rounding is not None:
            data["rounding"] = self.rounding
        return data


@dataclass(frozen=True)
class Crop:
    """A centred crop to height x width; a side shorter than the crop is padded with ``fill``
    around the picture instead, as torchvision's CenterCrop and timm's CenterCropOrPad do."""

    height: int
    width: int
    offset: str = "round"  # round: torchvision's; floor: transformers' and cv2-based code's
    fill: tuple[float, ...] = (0.0,)  # pixel values (0..255), one or one per channel

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.width, self.height

    def origin(self, width: int, height: int) -> tuple[int, int]:
        """The crop's (left, top) in a (width, height) picture; negative where it pads."""
        return (
            _centred(width - self.width, self.offset),
            _centred(height - self.height, self.offset),
        )

    def describe(self) -> str:
        floor = ", offset floored" if self.offset == "floor" else ""
        fill = ", ".join(f"{item:g}" for item in self.fill)
        padded = f", padded with {fill} where smaller" if any(self.fill) else ""
        return f"centre crop {self.height}x{self.width}{floor}{padded}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": "crop", "size": [self.height, self.width]}
        if self.offset != "round":
            data["offset"] = self.offset
        if any(self.fill):
            data["fill"] = list(self.fill)
        return data


@dataclass(frozen=True)
class Pad:
    """Padding to height x width with ``value`` (one, or one per channel) around the picture.

    ``center``: the picture in the middle (the offset floored, as a letterbox pastes it);
    ``top-left``: padding on the right and at the bottom. Before normalisation ``value`` is a
    pixel value (0..255); with ``after_normalize`` it is a value of the normalised tensor.
    """

    height: int
    width: int
    value: tuple[float, ...] = (0.0,)
    position: str = "center"
    after_normalize: bool = False

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if width > self.width or height > self.height:
            raise StepError(
                f"pad to {self.height}x{self.width} needs a picture no larger; the steps before "
                f"it give {height}x{width}"
            )
        return self.width, self.height

    def origin(self, width: int, height: int) -> tuple[int, int]:
        """Where a (width, height) picture goes on the padded canvas: (left, top)."""
        if self.position == "top-left":
            return 0, 0
        return (self.width - width) // 2, (self.height - height) // 2

    def describe(self) -> str:
        value = ", ".join(f"{item:g}" for item in self.value)
        where = "centred" if self.position == "center" else "right and bottom"
        space = " after normalisation" if self.after_normalize else ""
        return f"pad to {self.height}x{self.width} with {value} ({where}){space}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": "pad", "size": [self.height, self.width]}
        data.update(value=list(self.value), position=self.position)
        if self.after_normalize:
            data["after_normalize"] = True
        return data


@dataclass(frozen=True)
class Digit:
    """The MNIST pipeline: ink found on any background, fitted in a box and centred by mass."""

    size: int

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return self.size, self.size

    def describe(self) -> str:
        return f"digit {self.size}x{self.size} (MNIST: ink fitted and centred by mass)"

    def to_json(self) -> dict[str, Any]:
        return {"op": "digit", "size": self.size}


Step = Resize | Crop | Pad | Digit

_ROUND = {"floor": math.floor, "round": round, "ceil": math.ceil}


def _centred(room: int, offset: str) -> int:
    """A centred window's offset in a side ``room`` pixels longer than it (negative: shorter,
    the picture padded): torchvision rounds the crop and pads ``(crop - side) // 2`` first;
    transformers floors the crop and pads ``ceil((crop - side) / 2)`` first."""
    if room < 0:
        return -((1 - room) // 2) if offset == "floor" else -(-room // 2)
    return room // 2 if offset == "floor" else round(room / 2.0)


# --- parsing -------------------------------------------------------------------------------------


def _one_of(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise StepError(f"{what} is {value!r}; expected one of {', '.join(allowed)}")
    return str(value)


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StepError(f"{what} is {value!r}; expected a whole number of pixels above 0")
    return value


def _size(value: Any, what: str) -> tuple[int, int]:
    """N (square) or [height, width]."""
    if isinstance(value, list | tuple) and len(value) == 2:
        return _positive(value[0], f"{what} height"), _positive(value[1], f"{what} width")
    side = _positive(value, what)
    return side, side


def _values(value: Any, what: str) -> tuple[float, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(
        isinstance(item, int | float) and not isinstance(item, bool) and math.isfinite(item)
        for item in items
    ):
        raise StepError(f"{what} is {value!r}; expected a number or one number per channel")
    return tuple(float(item) for item in items)


_FIELDS = {
    "resize": {"op", "to", "size", "max_width", "interpolation", "resampling", "rounding"},
    "crop": {"op", "size", "offset", "fill"},
    "pad": {"op", "size", "value", "position", "after_normalize"},
    "digit": {"op", "size"},
}


def step_from_json(data: Any, where: str = "step") -> Step:
    """One step from its JSON object; StepError naming ``where`` and the field at fault."""
    if not isinstance(data, dict):
        raise StepError(f'{where} is {data!r}; expected an object such as {{"op": "crop"}}')
    op = data.get("op")
    if op not in _FIELDS:
        raise StepError(f"{where}: op is {op!r}; expected one of {', '.join(_FIELDS)}")
    unknown = sorted(set(data) - _FIELDS[op])
    if unknown:
        raise StepError(
            f"{where} ({op}): unknown field(s) {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(_FIELDS[op] - {'op'}))}"
        )
    if "size" not in data:
        raise StepError(f"{where} ({op}) needs a size")
    label = f"{where} ({op})"
    if op == "crop":
        height, width = _size(data["size"], f"{label} size")
        offset = _one_of(data.get("offset", "round"), OFFSETS, f"{label} offset")
        return Crop(height, width, offset, _values(data.get("fill", 0), f"{label} fill"))
    if op == "pad":
        height, width = _size(data["size"], f"{label} size")
        after = data.get("after_normalize", False)
        if not isinstance(after, bool):
            raise StepError(f"{label} after_normalize is {after!r}; expected true or false")
        return Pad(
            height,
            width,
            _values(data.get("value", 0), f"{label} value"),
            _one_of(data.get("position", "center"), POSITIONS, f"{label} position"),
            after,
        )
    if op == "digit":
        return Digit(_positive(data["size"], f"{label} size"))
    return _resize_from_json(data, label)


def _resize_from_json(data: dict[str, Any], label: str) -> Resize:
    to = _one_of(data.get("to"), RESIZE_TARGETS, f"{label} to")
    if to in BOXED_TARGETS:
        height, width = _size(data["size"], f"{label} size")
    else:
        height = width = _positive(data["size"], f"{label} size (one side)")
    max_width = data.get("max_width")
    if to == "height":
        max_width = _positive(max_width, f"{label} max_width")
    elif max_width is not None:
        raise StepError(f"{label}: max_width is for to: height, not to: {to}")
    interpolation = _one_of(
        data.get("interpolation", "bilinear"), INTERPOLATIONS, f"{label} interpolation"
    )
    resampling = _one_of(data.get("resampling", "pillow"), RESAMPLINGS, f"{label} resampling")
    if resampling == "opencv" and interpolation not in OPENCV_INTERPOLATIONS:
        raise StepError(
            f"{label}: opencv resampling offers {', '.join(OPENCV_INTERPOLATIONS)}, not "
            f"{interpolation}"
        )
    rounding = data.get("rounding")
    if rounding is not None:
        rounding = _one_of(rounding, ROUNDINGS, f"{label} rounding")
    return Resize(to, height, width, interpolation, resampling, rounding, max_width)


def steps_from_json(data: Any, where: str = "steps") -> tuple[Step, ...]:
    if not isinstance(data, list) or not data:
        raise StepError(f"{where} is {data!r}; expected a list of one or more steps")
    return tuple(step_from_json(item, f"{where}[{index}]") for index, item in enumerate(data))


def steps_to_json(steps: Iterable[Step]) -> list[dict[str, Any]]:
    return [step.to_json() for step in steps]


def describe_steps(steps: Iterable[Step]) -> str:
    return " → ".join(step.describe() for step in steps)


# --- checks --------------------------------------------------------------------------------------


def final_size(steps: Iterable[Step], width: int, height: int) -> tuple[int, int]:
    """(width, height) of a (width, height) picture after the steps; StepError if one cannot run."""
    for step in steps:
        width, height = step.output_size(width, height)
    return width, height


def check_steps(steps: tuple[Step, ...], height: int, width: int, channels: int) -> None:
    """Refuse steps that do not end at the input's size for every picture, or cannot run."""
    for index, step in enumerate(steps):
        step_from_json(step.to_json(), f"step {index + 1}")  # every field within its values
    digits = [step for step in steps if isinstance(step, Digit)]
    if digits and (len(steps) != 1 or digits[0].size != height or height != width):
        raise StepError(
            f"digit is the whole pipeline of a square input: the only step, its size the input's "
            f"({height}x{width})"
        )
    if digits and channels != 1:
        raise StepError("digit makes one-channel pictures; the input has 3 channels")
    seen_after = False
    for step in steps:
        values = step.value if isinstance(step, Pad) else getattr(step, "fill", (0.0,))
        if len(values) not in (1, channels):
            raise StepError(
                f"{step.describe()}: {len(values)} values for {channels} channel(s); expected "
                "one, or one per channel"
            )
        if isinstance(step, Pad):
            seen_after = seen_after or step.after_normalize
        elif seen_after:
            raise StepError(
                f"{step.describe()} comes after a pad after normalisation; only pads after "
                "normalisation can follow one"
            )
    ends = set()
    for probe_width, probe_height in PROBE_SIZES:
        try:
            end = final_size(steps, probe_width, probe_height)
        except StepError as error:
            raise StepError(f"for a {probe_height}x{probe_width} picture: {error}") from None
        ends.add(end)
        if end != (width, height) and len(ends) > 1:
            raise StepError(
                f"the steps make a {probe_height}x{probe_width} picture {end[1]}x{end[0]}, but "
                f"the model takes {height}x{width}; end them with a crop, a pad or an exact resize"
            )
    ((end_width, end_height),) = ends
    if (end_width, end_height) != (width, height):
        raise StepError(
            f"the steps end at {end_height}x{end_width}, but the model takes {height}x{width}"
        )
