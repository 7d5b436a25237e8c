"""Pipelines a user writes (<model>.preprocess.json, --preprocess FILE) and multi-label models:
their precedence, their refusals, and the stored spec round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from dlops.model.spec import ModelSpec, PostprocessSpec, SpecError, load_spec, save_spec
from dlops.model.steps import Crop, Pad, Resize
from dlops.pipeline.postprocess import Postprocessor
from tests.test_resolve import classifier, refusal, resolve, sidecar, spec_of

LETTERBOX = {
    "color": "RGB",
    "steps": [
        {"op": "resize", "to": "longer", "size": 320, "interpolation": "bilinear"},
        {"op": "pad", "size": 320, "value": 255},
    ],
    "scale": 1 / 255,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
TEXT_LINE = {
    "color": "BGR",
    "steps": [
        {"op": "resize", "to": "height", "size": 48, "max_width": 192, "resampling": "opencv"},
        {
            "op": "pad",
            "size": [48, 192],
            "value": 0,
            "position": "top-left",
            "after_normalize": True,
        },
    ],
    "scale": 1 / 255,
    "mean": 0.5,
    "std": 0.5,
}
CAFFE = {
    "color": "BGR",
    "steps": [
        {"op": "resize", "to": "exact", "size": 256},
        {"op": "crop", "size": 224},
    ],
    "scale": 1,
    "mean": [104, 117, 123],
    "std": 1,
}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


def test_a_letterbox_beside_the_model(model: Path) -> None:
    classifier(model, ("N", 3, 320, 320))
    sidecar(model, "model.preprocess.json", LETTERBOX)
    resolution = resolve(model)
    pre = resolution.spec.preprocess
    assert pre.steps == (Resize("longer", 320, 320), Pad(320, 320, (255.0,)))
    for name in ("steps", "color", "scale", "mean", "std"):
        assert resolution.spec.sources[f"preprocess.{name}"] == "model.preprocess.json"
    assert not any("ImageNet" in note for note in resolution.notes)


def test_keep_aspect_and_pad_after_normalising_on_a_dynamic_width(model: Path) -> None:
    """The size of a graph with a symbolic height and width comes from where the steps end."""
    classifier(model, ("N", 3, "H", "W"))
    path = model.parent / "text_line.json"
    path.write_text(json.dumps(TEXT_LINE))
    spec = spec_of(model, preprocess=path)
    assert (spec.input.height, spec.input.width) == (48, 192)
    assert spec.sources["input.height"] == "text_line.json"
    assert spec.preprocess.steps[-1] == Pad(48, 192, (0.0,), "top-left", after_normalize=True)
    assert (spec.preprocess.color, spec.preprocess.mean) == ("BGR", (0.5,) * 3)


def test_caffe_bgr_means_without_scaling(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "preprocess.json", CAFFE)
    pre = spec_of(model).preprocess
    assert pre.steps == (Resize("exact", 256, 256), Crop(224, 224))
    assert (pre.scale, pre.mean, pre.std) == (1.0, (104.0, 117.0, 123.0), (1.0,) * 3)


def test_precedence_flags_over_the_sidecar_over_exporters(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), metadata={"Image.BitmapPixelFormat": "Rgb8"})
    sidecar(model, "preprocessor_config.json", {"size": {"height": 224, "width": 224}})
    sidecar(model, "model.preprocess.json", {**CAFFE, "color": "BGR"})
    resolution = resolve(model)
    assert resolution.spec.preprocess.steps[0] == Resize("exact", 256, 256)
    assert resolution.spec.sources["preprocess.color"] == "model.preprocess.json"
    flagged = resolve(model, color="RGB", interpolation="lanczos", mode="resize")
    assert flagged.spec.preprocess.color == "RGB"
    assert flagged.spec.preprocess.steps == (Resize("exact", 224, 224, "lanczos"),)
    # --interpolation alone changes every resize of the given steps, nothing else.
    kept = resolve(model, interpolation="bicubic").spec
    assert kept.preprocess.steps == (Resize("exact", 256, 256, "bicubic"), Crop(224, 224))
    assert kept.sources["preprocess.steps"] == "model.preprocess.json; flag --interpolation"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"steps": [{"op": "rotate"}]}, "model.preprocess.json: steps[0]: op is 'rotate'"),
        ({"steps": [{"op": "crop"}]}, "steps[0] (crop) needs a size"),
        ({"steps": [{"op": "crop", "size": 224, "colour": 1}]}, "unknown field(s) colour"),
        ({"steps": [{"op": "resize", "to": "side", "size": 9}]}, "to is 'side'; expected one of"),
        ({"steps": [{"op": "resize", "to": "exact", "size": 256}]}, "the model takes 224x224"),
        ({"steps": []}, "expected a list of one or more steps"),
        ({"color": "HSV"}, "color 'HSV'; expected one of RGB, BGR, L"),
        ({"scale": 0}, "scale 0; expected a number above 0"),
        ({"gamma": 2.2}, "unknown key(s) gamma"),
        ("[1, 2]", "is not a JSON object"),
    ],
)
def test_pipelines_that_cannot_be_served(model: Path, content: dict | str, fragment: str) -> None:
    classifier(model, ("N", 3, 224, 224))
    sidecar(model, "model.preprocess.json", content)
    assert fragment in refusal(model)


def test_a_missing_preprocess_file(model: Path) -> None:
    classifier(model)
    assert "--preprocess nope.json: no such file" in refusal(model, preprocess=Path("nope.json"))


def test_steps_survive_the_stored_spec(model: Path, tmp_path: Path) -> None:
    classifier(model, ("N", 3, "H", "W"))
    sidecar(model, "model.preprocess.json", TEXT_LINE)
    spec = spec_of(model)
    save_spec(spec, tmp_path)
    assert load_spec(tmp_path).identity() == spec.identity()
    stored = json.loads((tmp_path / "spec.json").read_text())
    assert stored["spec_version"] == 2
    assert stored["preprocess"]["steps"][0] == {
        "op": "resize",
        "to": "height",
        "size": 48,
        "max_width": 192,
        "interpolation": "bilinear",
        "resampling": "opencv",
    }


def test_a_spec_of_the_previous_release_asks_for_a_new_import(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps({"spec_version": 1}))
    with pytest.raises(SpecError, match="spec_version 1 is not 2; import the model again"):
        load_spec(tmp_path)


# --- multi-label -------------------------------------------------------------------------------


def test_sigmoid_over_several_outputs_is_multi_label(model: Path) -> None:
    resolution = resolve(classifier(model, ("N", 3, 32, 32), classes=4, tail=["Sigmoid"]))
    post = resolution.spec.postprocess
    assert (post.task, post.activation, post.threshold) == ("multi", "none", 0.5)
    assert resolution.spec.sources["postprocess.task"].startswith("graph (4 outputs ending in")


def test_declared_multi_label_logits_get_a_sigmoid_each(model: Path) -> None:
    classifier(model, ("N", 3, 32, 32), classes=3)
    spec = spec_of(model, multi_label=True, threshold=0.3)
    post = spec.postprocess
    assert (post.task, post.activation, post.threshold) == ("multi", "sigmoid", 0.3)
    sidecar(
        model, "config.json", {"model_type": "vit", "problem_type": "multi_label_classification"}
    )
    assert spec_of(model).postprocess.task == "multi"


def test_multi_label_answers_list_every_label_at_the_threshold() -> None:
    spec = PostprocessSpec("y", 3, "sigmoid", ("cat", "dog", "car"), 0.5, 3, task="multi")
    post = Postprocessor(spec)
    probabilities = post.probabilities(np.array([[2.0, 0.0, -3.0]]))
    np.testing.assert_allclose(probabilities[0], 1 / (1 + np.exp(-np.array([2.0, 0.0, -3.0]))))
    answer = post.answer(probabilities[0])
    assert [entry["label"] for entry in answer["labels"]] == ["cat", "dog"]  # 0.5 is at it
    assert answer["threshold"] == 0.5 and len(answer["top_k"]) == 3
    assert post.label_of(probabilities[0]) == "cat, dog"
    assert post.answer(np.array([0.1, 0.2, 0.3]))["labels"] == []


def test_multi_label_refusals(model: Path) -> None:
    classifier(model, ("N", 3, 32, 32), classes=1)
    assert "--multi-label needs two or more output units" in refusal(model, multi_label=True)
    spec = spec_of(classifier(model, ("N", 3, 32, 32), classes=3), multi_label=True)
    bad = ModelSpec(
        spec.input,
        spec.preprocess,
        PostprocessSpec("y", 3, "softmax", ("a", "b", "c"), 0.5, 3, "multi"),
    )
    with pytest.raises(SpecError, match="not softmax"):
        ModelSpec.from_json(bad.to_json())


def test_uint8_input_with_a_sidecar_normalisation_is_noted(model: Path) -> None:
    classifier(model, ("N", 3, 224, 224), TensorProto.UINT8)
    sidecar(model, "model.preprocess.json", CAFFE)
    resolution = resolve(model)
    assert resolution.spec.preprocess.is_identity
    assert any("model.preprocess.json rescales or normalises" in n for n in resolution.notes)
