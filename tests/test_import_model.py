"""import_model.py, run as users run it, against a throwaway BentoML home per test."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import BENTOML, MODEL, bentoml_env, run_import


def stored_model(home: Path, tag: str) -> dict:
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


def save_graph(path: Path, inputs: list, outputs: list, nodes: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_imports_with_signature_and_card_metrics(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(MODEL))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported: binary_classifier_3:")
    tag = result.stdout.split()[-1]
    info = stored_model(tmp_path, tag)
    metadata = info["metadata"]
    assert metadata["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert metadata["input_name"] == "input"
    assert metadata["input_dtype"] == "uint8"
    assert metadata["input_shape"][1:] == ["28", "28"]
    assert metadata["image_size"] == 28
    assert metadata["output_name"] == "output"
    assert metadata["threshold"] == 0.5
    assert metadata["labels"] == ["no 3", "3"]
    card = json.loads(MODEL.with_suffix(".metrics.json").read_text())["test"]
    assert metadata["metrics"] == card
    assert 0.0 < metadata["metrics"]["f1"] <= 1.0


def test_reimporting_the_same_file_keeps_one_version(tmp_path: Path) -> None:
    first = run_import(tmp_path, str(MODEL))
    second = run_import(tmp_path, str(MODEL))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already imported, unchanged:")
    assert first.stdout.split()[-1] == second.stdout.split()[-1]
    assert len(versions(tmp_path)) == 1


def test_new_settings_make_a_new_latest_version(tmp_path: Path) -> None:
    run_import(tmp_path, str(MODEL))
    changed = run_import(tmp_path, str(MODEL), "--threshold", "0.8", "--labels", "other,three")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.startswith("imported:")
    assert len(versions(tmp_path)) == 2
    latest = stored_model(tmp_path, "binary_classifier_3:latest")["metadata"]
    assert latest["threshold"] == 0.8
    assert latest["labels"] == ["other", "three"]


def test_custom_name(tmp_path: Path) -> None:
    result = run_import(tmp_path, str(MODEL), "--name", "my_digits")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1].startswith("my_digits:")


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
        (TensorProto.FLOAT, ["N", 1, 28, 28], ["output"], "uint8 [N, size, size]"),
        (TensorProto.UINT8, ["N", 28, 32], ["output"], "square"),
        (TensorProto.UINT8, ["N", 28, 28], ["a", "b"], "exactly one input and one output"),
        (TensorProto.UINT8, ["N", 28, 28], ["output"], "one logit per image"),
    ],
    ids=["float-nchw-input", "not-square", "two-outputs", "image-shaped-output"],
)
def test_wrong_signature(
    tmp_path: Path, input_type: int, input_shape: list, outputs: list[str], fragment: str
) -> None:
    """Graphs that pass the ONNX checker but are not one-logit-per-image classifiers."""
    path = save_graph(
        tmp_path / "identity.onnx",
        [helper.make_tensor_value_info("input", input_type, input_shape)],
        [helper.make_tensor_value_info(name, input_type, input_shape) for name in outputs],
        [helper.make_node("Identity", ["input"], [name]) for name in outputs],
    )
    result = run_import(tmp_path, str(path))
    assert_one_line_error(result, "wrong signature", fragment)
    assert versions(tmp_path) == []


@pytest.mark.parametrize(
    ("flag", "value"), [("--threshold", "1.5"), ("--threshold", "x"), ("--labels", "only-one")]
)
def test_bad_options(tmp_path: Path, flag: str, value: str) -> None:
    result = run_import(tmp_path, str(MODEL), flag, value)
    assert result.returncode == 2
    assert flag in result.stderr
