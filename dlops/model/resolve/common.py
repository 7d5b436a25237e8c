"""What every part of the import's resolution shares: the refusal, file helpers, the field layers
and a :class:`Finding`, what one source (an exporter's file, a sidecar, metadata) says."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlops.model.steps import Step


class ImportRefused(Exception):
    """A model this service cannot serve, or whose spec cannot be decided; one-line message."""


@dataclass
class Finding:
    """What one source says about the preprocessing and the input; None where it is silent."""

    source: str  # e.g. "preprocessor_config.json", shown beside every value it set
    steps: tuple[Step, ...] | None = None
    color: str | None = None
    interpolation: str | None = None  # for the presets' resize, when no steps are given
    resampling: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # For an input whose channels, height or width are symbolic in the graph.
    channels: int | None = None
    size: tuple[int, int] | None = None  # (height, width)
    task: str | None = None  # "multi" for a multi-label model
    notes: list[str] = field(default_factory=list)

    def normalisation(self) -> dict[str, Any]:
        values = {"scale": self.scale, "mean": self.mean, "std": self.std}
        return {key: value for key, value in values.items() if value is not None}


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def number_text(value: float) -> str:
    if math.isclose(value, 1 / 255, rel_tol=1e-9):
        return "1/255"
    return f"{value:g}"


def sidecar(model_path: Path, name: str) -> Path | None:
    """``<stem>.<name>`` beside the model, else ``<name>`` in its directory."""
    for candidate in (model_path.with_name(f"{model_path.stem}.{name}"), model_path.parent / name):
        if candidate.is_file():
            return candidate
    return None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ImportRefused(f"{path.name} is not readable JSON ({first_line(error)})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ImportRefused(f"{path.name} is not a JSON object")
    return data


def lines(text: str, strip: bool = True) -> list[str]:
    """One label per line; trailing empty lines dropped."""
    found = [line.rstrip("\r") for line in text.split("\n")]
    if strip:
        found = [line.strip() for line in found]
    while found and not found[-1].strip():
        found.pop()
    return found


def numbers(value: Any, what: str, label: str) -> tuple[float, ...]:
    """One number or a list of numbers from a config file."""
    values = value if isinstance(value, list | tuple) else [value]
    try:
        result = tuple(float(item) for item in values)
    except (TypeError, ValueError):
        raise ImportRefused(f"{label}: {what} {value!r} is not numbers") from None
    if not result or not all(math.isfinite(item) for item in result):
        raise ImportRefused(f"{label}: {what} {value!r} is not finite numbers")
    return result


def describe(value: Any, limit: int = 5) -> str:
    """A spec value as the import prints it (long label lists shortened)."""
    if isinstance(value, tuple | list):
        items = [number_text(item) if isinstance(item, float) else str(item) for item in value]
        if len(items) > limit:
            return ", ".join(items[:limit]) + f", … ({len(items)} in all)"
        return ", ".join(items)
    if isinstance(value, float):
        return number_text(value)
    return "-" if value is None else str(value)


class Fields:
    """Values by dotted field name, each with the source that set it last."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def set(self, name: str, value: Any, source: str) -> None:
        self.values[name] = value
        self.sources[name] = source

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values
