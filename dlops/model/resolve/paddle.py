"""PaddlePaddle: a graph converted by paddle2onnx, whose vision pipelines read with OpenCV; and the
``inference.yml`` PaddleClas and PaddleOCR export beside the model, run as their code runs it.

``PreProcess.transform_ops`` is read op by op as PaddleClas's deploy code builds it (DecodeImage,
ResizeImage with cv2 by default and int(round()) sizes, CropImage with floored offsets,
NormalizeImage, ToCHWImage) and as PaddleOCR's classifier evaluation runs its own (DecodeImage with
img_mode, ClsResizeImg: height by aspect, cv2, normalised to -1..1, zero-padded on the right; label
ops and KeepKeys skipped, as tools/infer_cls.py does). Without DecodeImage, which PaddleClas's
export drops, the picture is RGB: its predictor flips cv2's BGR before the ops. Any other op is
refused. The labels (``label_list``, ``class_id_map_file``) are read for
dlops/model/resolve/labels.py. Read: PaddleClas deploy/python/preprocess.py,
deploy/python/predict_cls.py, deploy/python/postprocess.py (Topk, parse_class_id_map),
ppcls/utils/config.py (dump_infer_config); PaddleOCR ppocr/utils/export_model.py
(dump_infer_config), ppocr/data/imaug/operators.py (DecodeImage, NormalizeImage),
ppocr/data/imaug/rec_img_aug.py (ClsResizeImg, resize_norm_img), tools/infer_cls.py,
configs/cls/cls_mv3.yml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import yaml

from dlops.model.resolve.common import Finding, ImportRefused, first_line, lines, numbers, sidecar
from dlops.model.steps import (
    INTERPOLATIONS,
    OPENCV_INTERPOLATIONS,
    Crop,
    Pad,
    Resize,
    Step,
    final_size,
)

# paddle2onnx names the graph "PaddlePaddle Graph ..." and the values it writes "p2o.<op>...";
# Paddle's vision pipelines (PaddleOCR, PaddleClas) read images with OpenCV, so such models were
# trained on BGR images resized by cv2.
PADDLE_VALUE_PREFIX = "p2o."
INFERENCE_CONFIG = "inference.yml"
# UnifiedResize's backends, and the filters of each that dlops reproduces (cv2's "area" it does
# not; "random" is for training).
RESIZE_BACKENDS = {"cv2": ("opencv", OPENCV_INTERPOLATIONS), "pil": ("pillow", INTERPOLATIONS)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # NormalizeImage's defaults
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTI_LABEL_OUTPUT = "MultiLabelThreshOutput"  # PaddleClas's multi-label post-processing
DEFAULT_THRESHOLD = 0.5


def converted_from_paddle(model: onnx.ModelProto) -> bool:
    return (
        "paddle" in model.producer_name.lower()
        or "paddle" in model.graph.name.lower()
        or any(name.startswith(PADDLE_VALUE_PREFIX) for n in model.graph.node for name in n.output)
    )


def provenance(model: onnx.ModelProto, channels: int) -> Finding | None:
    """OpenCV's conventions for a graph converted from Paddle, where the file says so."""
    if not converted_from_paddle(model):
        return None
    return Finding(
        source="graph (converted from Paddle: OpenCV's conventions)",
        resampling="opencv",
        color="BGR" if channels == 3 else None,
    )


def provenance_note(colour: bool, resampling: bool) -> str | None:
    """What the provenance decided, for the parts no higher source overrode."""
    decided = [
        part
        for part, kept in (
            ("BGR channels", colour),
            ("cv2.resize's sampling (no antialiasing)", resampling),
        )
        if kept
    ]
    if not decided:
        return None
    return (
        "the graph was converted from Paddle (paddle2onnx), whose vision pipelines read images "
        f"with OpenCV, so {' and '.join(decided)} were assumed; change them with --color and "
        "--resampling"
    )


# --- inference.yml -------------------------------------------------------------------------------


def load_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ImportRefused(f"{path.name} is not readable YAML ({first_line(error)})") from None
    if not isinstance(data, dict):
        raise ImportRefused(f"{path.name} is not a YAML mapping")
    return data


@dataclass
class _Pipeline:
    """The steps and values the ops give so far."""

    label: str
    color: str = "RGB"
    steps: list[Step] = field(default_factory=list)
    # (scale, mean, std) and the op that set them
    normalisation: tuple[float, tuple[float, ...], tuple[float, ...]] | None = None
    normalised_by: str = ""
    notes: list[str] = field(default_factory=list)

    def refuse(self, op: str, why: str) -> ImportRefused:
        return ImportRefused(f"{self.label}: PreProcess {op} {why}")

    def geometry(self, op: str, step: Step) -> None:
        if self.normalisation is not None:
            raise self.refuse(
                op,
                f"comes after {self.normalised_by}, which normalised the pixels already; dlops "
                "resizes and crops pixels before normalising them",
            )
        self.steps.append(step)

    def normalise(
        self, op: str, scale: float, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        if self.normalisation is not None:
            raise self.refuse(op, f"normalises again after {self.normalised_by}")
        self.normalisation, self.normalised_by = (scale, mean, std), op


def _pixels(value: Any, pipeline: _Pipeline, op: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise pipeline.refuse(op, f"{what} is {value!r}; expected a whole number of pixels")
    return value


def _width_height(value: Any, pipeline: _Pipeline, op: str) -> tuple[int, int]:
    """ResizeImage's and CropImage's size: N, or [width, height] (both unpack it that way)."""
    if isinstance(value, list) and len(value) == 2:
        return (
            _pixels(value[0], pipeline, op, "size width"),
            _pixels(value[1], pipeline, op, "size height"),
        )
    side = _pixels(value, pipeline, op, "size")
    return side, side


def _decode_image(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    # PaddleOCR's takes img_mode (RGB by default); PaddleClas's takes to_rgb (true by default).
    mode = params.get("img_mode", "RGB" if params.get("to_rgb", True) else "BGR")
    if mode not in ("RGB", "BGR"):
        raise pipeline.refuse("DecodeImage", f"img_mode {mode!r} is not RGB or BGR")
    pipeline.color = mode
    if params.get("ignore_orientation"):
        pipeline.notes.append(
            f"{pipeline.label}'s DecodeImage ignores the EXIF orientation; dlops turns pictures "
            "upright as their EXIF says"
        )


def _resize_image(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    backend = str(params.get("backend", "cv2")).lower()
    if backend not in RESIZE_BACKENDS:
        raise pipeline.refuse("ResizeImage", f"backend {backend!r} is not cv2 or pil")
    resampling, filters = RESIZE_BACKENDS[backend]
    interpolation = str(params.get("interpolation") or "bilinear").lower()
    if interpolation not in filters:
        raise pipeline.refuse(
            "ResizeImage",
            f"interpolation {interpolation!r} ({backend}) is not one dlops reproduces; it "
            f"reproduces {', '.join(filters)}",
        )
    short = params.get("resize_short")
    if isinstance(short, int) and not isinstance(short, bool) and short > 0:
        # percent = short / min(w, h); each side int(round(side * percent))
        step = Resize("shorter", short, short, interpolation, resampling, rounding="round")
    elif params.get("size") is not None:
        width, height = _width_height(params["size"], pipeline, "ResizeImage")
        step = Resize("exact", height, width, interpolation, resampling)
    else:
        raise pipeline.refuse(
            "ResizeImage", f"has neither a size nor a resize_short above 0 ({short!r})"
        )
    pipeline.geometry("ResizeImage", step)


def _crop_image(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    width, height = _width_height(params.get("size"), pipeline, "CropImage")
    pipeline.geometry("CropImage", Crop(height, width, offset="floor"))


def _scale(value: Any, pipeline: _Pipeline) -> float:
    """NormalizeImage's scale: a number, or a fraction written as text ("1.0/255.0")."""
    if value is None:
        return 1 / 255
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        numerator, _, denominator = str(value).partition("/")
        return float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        raise pipeline.refuse(
            "NormalizeImage", f"scale {value!r} is not a number or a fraction such as 1.0/255.0"
        ) from None


def _normalize_image(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    if params.get("channel_num", 3) != 3:
        raise pipeline.refuse(
            "NormalizeImage", f"channel_num {params['channel_num']!r} adds channels; dlops feeds 3"
        )
    label = f"{pipeline.label} NormalizeImage"
    mean = params.get("mean")
    std = params.get("std")
    pipeline.normalise(
        "NormalizeImage",
        _scale(params.get("scale"), pipeline),
        IMAGENET_MEAN if mean is None else numbers(mean, "mean", label),
        IMAGENET_STD if std is None else numbers(std, "std", label),
    )


def _cls_resize_img(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    """resize_norm_img: height to H, width ceil(H * w / h) up to W (cv2 bilinear), then
    (x / 255 - 0.5) / 0.5, then zeros on the right up to W."""
    shape = params.get("image_shape")
    if not isinstance(shape, list) or len(shape) != 3 or shape[0] != 3:
        raise pipeline.refuse(
            "ClsResizeImg", f"image_shape is {shape!r}; expected [3, height, width]"
        )
    height = _pixels(shape[1], pipeline, "ClsResizeImg", "image_shape height")
    width = _pixels(shape[2], pipeline, "ClsResizeImg", "image_shape width")
    resize = Resize("height", height, height, "bilinear", "opencv", max_width=width)
    pipeline.geometry("ClsResizeImg", resize)
    pipeline.normalise("ClsResizeImg", 1 / 255, (0.5,), (0.5,))
    pipeline.steps.append(Pad(height, width, (0.0,), "top-left", after_normalize=True))


def _layout_only(pipeline: _Pipeline, params: dict[str, Any]) -> None:
    """ToCHWImage and KeepKeys: the layout and what the loader returns, which the graph says."""


OPS: dict[str, tuple[Callable[[_Pipeline, dict[str, Any]], None], frozenset[str]]] = {
    "DecodeImage": (
        _decode_image,
        frozenset({"to_rgb", "to_np", "channel_first", "img_mode", "ignore_orientation"}),
    ),
    "ResizeImage": (
        _resize_image,
        frozenset({"size", "resize_short", "interpolation", "backend", "return_numpy"}),
    ),
    "CropImage": (_crop_image, frozenset({"size"})),
    "NormalizeImage": (
        _normalize_image,
        frozenset({"scale", "mean", "std", "order", "output_fp16", "channel_num"}),
    ),
    "ToCHWImage": (_layout_only, frozenset()),
    "ClsResizeImg": (_cls_resize_img, frozenset({"image_shape"})),
    "KeepKeys": (_layout_only, frozenset({"keep_keys"})),
}


def _op(entry: Any, label: str, index: int) -> tuple[str, dict[str, Any]]:
    """One ``{Name: {param: value}}`` item of transform_ops."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ImportRefused(
            f"{label}: PreProcess.transform_ops[{index}] is {entry!r}; expected one op such as "
            "{ResizeImage: {resize_short: 256}}"
        )
    ((name, params),) = entry.items()
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ImportRefused(f"{label}: PreProcess {name} takes {params!r}; expected a mapping")
    return str(name), params


def read(path: Path) -> Finding | None:
    """The steps, colour and normalisation of ``inference.yml``'s PreProcess."""
    config_path = sidecar(path, INFERENCE_CONFIG)
    if config_path is None:
        return None
    config = load_config(config_path)
    label = config_path.name
    preprocess = config.get("PreProcess")
    if preprocess is None:
        return None
    ops = preprocess.get("transform_ops") if isinstance(preprocess, dict) else None
    if not isinstance(ops, list) or not ops:
        raise ImportRefused(f"{label}: PreProcess.transform_ops is {ops!r}; expected a list of ops")
    pipeline = _Pipeline(label)
    for index, entry in enumerate(ops):
        name, params = _op(entry, label, index)
        if "Label" in name:
            continue  # a training label op (ClsLabelEncode): not run at inference
        if name not in OPS:
            raise ImportRefused(
                f"{label}: PreProcess op {name} is not one dlops runs; it runs "
                f"{', '.join(OPS)} (write the steps in a <model>.preprocess.json instead)"
            )
        run, takes = OPS[name]
        unknown = sorted(set(params) - takes)
        if unknown:
            raise pipeline.refuse(
                name,
                f"has {', '.join(unknown)}, which dlops does not know; it takes "
                f"{', '.join(sorted(takes)) or 'nothing'}",
            )
        run(pipeline, params)
    if not pipeline.steps:
        raise ImportRefused(
            f"{label} does not resize or crop, so pictures reach the model at their own size; "
            "dlops serves one size: write the steps in a <model>.preprocess.json"
        )
    scale, mean, std = pipeline.normalisation or (1.0, (0.0,), (1.0,))
    steps = tuple(pipeline.steps)
    finding = Finding(
        source=label,
        steps=steps,
        color=pipeline.color,
        scale=scale,
        mean=mean,
        std=std,
        size=final_size(steps, 640, 480)[::-1],
        notes=pipeline.notes,
    )
    _multi_label(config.get("PostProcess"), finding)
    return finding


def _multi_label(postprocess: Any, finding: Finding) -> None:
    """PaddleClas's MultiLabelThreshOutput: independent labels, each against its threshold."""
    if not isinstance(postprocess, dict) or MULTI_LABEL_OUTPUT not in postprocess:
        return
    finding.task = "multi"
    settings = postprocess[MULTI_LABEL_OUTPUT]
    threshold = (
        settings.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(settings, dict)
        else DEFAULT_THRESHOLD
    )
    if threshold != DEFAULT_THRESHOLD:
        finding.notes.append(
            f"{finding.source}'s {MULTI_LABEL_OUTPUT} threshold is {threshold!r}; dlops answers "
            f"with {DEFAULT_THRESHOLD} unless --threshold says otherwise"
        )


def labels(path: Path) -> tuple[list[str] | dict[int, str], str] | None:
    """``inference.yml``'s class names: PostProcess's (or an entry's) label_list, else the
    class_id_map_file it names, found from the file's own directory; None without them."""
    config_path = sidecar(path, INFERENCE_CONFIG)
    if config_path is None:
        return None
    postprocess = load_config(config_path).get("PostProcess")
    if not isinstance(postprocess, dict):
        return None
    # PaddleOCR writes PostProcess {name, label_list}; PaddleClas PostProcess {Topk: {...}}.
    entries = [("PostProcess", postprocess)]
    entries += [(f"PostProcess.{key}", value) for key, value in postprocess.items()]
    for where, entry in entries:
        if not isinstance(entry, dict):
            continue
        label_list = entry.get("label_list")
        if isinstance(label_list, list) and label_list:  # Topk prefers it to the file
            return [str(name) for name in label_list], f"{config_path.name} {where}.label_list"
        map_file = entry.get("class_id_map_file")
        if isinstance(map_file, str) and (config_path.parent / map_file).is_file():
            file = config_path.parent / map_file
            delimiter = str(entry.get("delimiter") or " ")
            source = f"{config_path.name} {where}.class_id_map_file ({file.name})"
            return _class_id_map(file, delimiter), source
    return None


def _class_id_map(file: Path, delimiter: str) -> dict[int, str]:
    """parse_class_id_map: ``<index><delimiter><name>`` on each line."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ImportRefused(f"{file.name}: cannot read it ({first_line(error)})") from None
    by_index: dict[int, str] = {}
    for number, line in enumerate(lines(text, strip=False), start=1):
        index, _, name = line.partition(delimiter)
        try:
            by_index[int(index)] = name
        except ValueError:
            raise ImportRefused(
                f"{file.name} line {number}: {index!r} is not a class index (each line is "
                f"<index>{delimiter}<name>)"
            ) from None
    return by_index
