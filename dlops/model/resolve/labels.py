"""The class names, from the first source that has them (highest precedence first).

``--labels``; ``labels.txt``; TorchServe's ``index_to_name.json``; Keras' ``class_indices.json``;
``config.json``'s ``id2label`` (Hugging Face) or ``label_names`` (timm); ``inference.yml``'s
``label_list`` or ``class_id_map_file`` (PaddleClas, PaddleOCR: dlops/model/resolve/paddle.py); ONNX
``metadata_props`` (``labels``, ``classes``, ``names`` as Ultralytics writes it, ``character`` as
RapidOCR does).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx

from dlops.model.resolve import paddle
from dlops.model.resolve.common import (
    ImportRefused,
    describe,
    first_line,
    lines,
    read_json,
    sidecar,
)

LABEL_PROPS = ("labels", "classes", "names", "character")


def _parse_label_text(text: str) -> list[str] | dict[Any, Any]:
    """A JSON list or dict, a Python list or dict literal, or newline/comma-separated names."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{", "("):
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(stripped)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
            if isinstance(value, list | tuple):
                return [str(item) for item in value]
    if "\n" in stripped:
        return lines(stripped)
    return [part.strip() for part in stripped.split(",")]


def _flag_labels(text: str) -> list[str]:
    if text.startswith("@"):
        file = Path(text[1:])
        try:
            return lines(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ImportRefused(f"--labels {text}: cannot read it ({first_line(error)})") from None
    labels = [part.strip() for part in text.split(",")]
    if not all(labels):
        raise ImportRefused(f"--labels {text!r} has an empty label")
    return labels


def _label_candidates(
    path: Path, model: onnx.ModelProto, flag: str | None
) -> Iterator[tuple[list[str] | dict[Any, Any], str]]:
    """(labels, source) from each source that has some, highest precedence first (lazily)."""
    if flag is not None:
        yield _flag_labels(flag), "flag --labels"
    labels_txt = sidecar(path, "labels.txt")
    if labels_txt is not None:
        try:
            yield lines(labels_txt.read_text(encoding="utf-8")), labels_txt.name
        except (OSError, UnicodeDecodeError) as error:
            raise ImportRefused(
                f"{labels_txt.name}: cannot read it ({first_line(error)})"
            ) from None
    index_to_name = sidecar(path, "index_to_name.json")
    if index_to_name is not None:
        data = read_json(index_to_name)
        if not isinstance(data, dict):
            raise ImportRefused(f"{index_to_name.name} is not a JSON object {{index: name}}")
        yield (
            {
                key: value[-1] if isinstance(value, list) and value else value
                for key, value in data.items()
            },
            index_to_name.name,
        )
    class_indices = sidecar(path, "class_indices.json")
    if class_indices is not None:
        yield _keras_class_indices(class_indices), class_indices.name
    config_json = sidecar(path, "config.json")
    if config_json is not None:
        data = read_json(config_json)
        if isinstance(data, dict) and isinstance(data.get("id2label"), dict):
            yield data["id2label"], f"{config_json.name} id2label"
        elif isinstance(data, dict) and isinstance(data.get("label_names"), list):
            yield [str(name) for name in data["label_names"]], f"{config_json.name} label_names"
    inference_labels = paddle.labels(path)
    if inference_labels is not None:
        yield inference_labels
    props = {prop.key: prop.value for prop in model.metadata_props}
    for key in LABEL_PROPS:
        if key in props:
            source = f"metadata_props[{key!r}]"
            if key == "character":
                yield lines(props[key], strip=False), source
            else:
                yield _parse_label_text(props[key]), source


def _fit_labels(raw: list[str] | dict[Any, Any], source: str, classes: int) -> tuple[str, ...]:
    expected = 2 if classes == 1 else classes
    unit = "output unit" if classes == 1 else "outputs"
    binary = " (a binary model: 2 labels, negative then positive)" if classes == 1 else ""
    if len(raw) != expected:
        raise ImportRefused(
            f"{len(raw)} labels from {source}, but the model has {classes} {unit}{binary}"
        )
    labels = tuple(raw) if isinstance(raw, list) else _labels_by_index(raw, source, expected)
    for index, label in enumerate(labels):
        if not label:
            raise ImportRefused(f"labels from {source}: label {index} is empty")
    return labels


def _labels_by_index(raw: dict[Any, Any], source: str, expected: int) -> tuple[str, ...]:
    by_index: dict[int, Any] = {}
    for key, value in raw.items():
        try:
            by_index[int(key)] = value
        except (TypeError, ValueError):
            raise ImportRefused(f"labels from {source}: key {key!r} is not a class index") from None
    if set(by_index) != set(range(expected)):
        raise ImportRefused(
            f"labels from {source} cover indices {describe(sorted(by_index))}, but the model's "
            f"classes are 0..{expected - 1}"
        )
    return tuple(str(by_index[index]) for index in range(expected))


def _keras_class_indices(path: Path) -> dict[int, str]:
    """Keras' ``flow_from_directory`` mapping, ``{"name": index}``, turned round."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(index, int) and not isinstance(index, bool) for index in data.values()
    ):
        raise ImportRefused(
            f"{path.name} is not a JSON object {{name: class index}} as Keras writes"
        )
    by_index = {index: str(name) for name, index in data.items()}
    if len(by_index) != len(data):
        raise ImportRefused(f"{path.name} gives two names the same class index")
    return by_index


def resolve_labels(
    path: Path, model: onnx.ModelProto, flag: str | None, classes: int, notes: list[str]
) -> tuple[tuple[str, ...], str]:
    for raw, source in _label_candidates(path, model, flag):
        return _fit_labels(raw, source, classes), source
    count = 2 if classes == 1 else classes
    notes.append(
        f"no labels found (--labels, labels.txt, index_to_name.json, class_indices.json, "
        f"config.json id2label or label_names, inference.yml label_list or class_id_map_file, "
        f"metadata_props labels/classes/names/character), "
        f"so the classes are named by index 0..{count - 1}; name them with --labels or a "
        "labels.txt beside the model"
    )
    return tuple(str(index) for index in range(count)), "default (class indices)"
