"""A pipeline written by the user: ``<model>.preprocess.json`` beside the model, or
``--preprocess FILE``, in the vocabulary of dlops/model/steps.py::

    {"color": "RGB", "steps": [{"op": "resize", "to": "longer", "size": 320},
                               {"op": "pad", "size": 320, "value": 255}],
     "scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

Every key is optional; what it gives overrides every source but the flags.
"""

from __future__ import annotations

from pathlib import Path

from dlops.model.resolve.common import Finding, ImportRefused, numbers, read_json_object, sidecar
from dlops.model.spec import COLORS
from dlops.model.steps import StepError, final_size, steps_from_json

NAME = "preprocess.json"
KEYS = ("color", "steps", "scale", "mean", "std")


def find(path: Path, given: Path | None) -> Path | None:
    if given is not None:
        if not given.is_file():
            raise ImportRefused(f"--preprocess {given}: no such file")
        return given
    return sidecar(path, NAME)


def read(file: Path) -> Finding:
    label = file.name
    data = read_json_object(file)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ImportRefused(
            f"{label}: unknown key(s) {', '.join(unknown)}; it takes {', '.join(KEYS)}"
        )
    finding = Finding(source=label)
    if "color" in data:
        if data["color"] not in COLORS:
            raise ImportRefused(
                f"{label}: color {data['color']!r}; expected one of {', '.join(COLORS)}"
            )
        finding.color = data["color"]
    if "steps" in data:
        try:
            finding.steps = steps_from_json(data["steps"])
            finding.size = final_size(finding.steps, 640, 480)[::-1]
        except StepError as error:
            raise ImportRefused(f"{label}: {error}") from None
    if "scale" in data:
        (finding.scale,) = numbers(data["scale"], "scale", label)
        if finding.scale <= 0:
            raise ImportRefused(f"{label}: scale {finding.scale:g}; expected a number above 0")
    for key in ("mean", "std"):
        if key in data:
            setattr(finding, key, numbers(data[key], key, label))
    return finding
