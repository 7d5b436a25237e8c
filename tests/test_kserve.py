"""The Open Inference Protocol (KServe V2) under /v2, driven by a real third-party client.

tritonclient (NVIDIA's HTTP client for the protocol) talks to a real `bentoml serve`; a few raw
requests cover what tritonclient never sends (JSON-encoded BYTES, malformed bodies). Expected
answers come from the model store (names, version, the stored spec) and from POST /predict.

The reference binary digit model is tested in depth; the last section runs the same checks on
all three models (binary digits, 10-class digits, the third-party document-orientation model):
the metadata shows each model's real input, its own tensors and image files both work and agree
with /predict, and the classification extension (tritonclient's ``class_count``) ranks classes.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from dlops import config
from dlops.model.spec import ModelSpec, load_spec
from dlops.pipeline.decode import decode_image
from dlops.pipeline.preprocess import Preprocessor
from dlops.pipeline.preprocess.digit import to_model_input
from tests import documents
from tests.conftest import BENTOML, DIGITS_10_MODEL, FIXTURES, Server, bentoml_env, run_import
from tests.test_startup import SLOW_MODEL_ENV, save_slow_model

DIGITS = sorted((FIXTURES / "digits").glob("*.png"))
THREE = FIXTURES / "digits" / "test0300_digit3.png"
ZERO = FIXTURES / "digits" / "test0000_digit0.png"
VARIANTS = sorted((FIXTURES / "variants").glob("test0300_*"))
FILES_INPUT = "image_file"
V2_DATATYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16"}
V2_DATATYPES_NUMPY = {"UINT8": np.uint8, "FP32": np.float32, "FP16": np.float16}


@pytest.fixture(scope="module")
def stored_model(model_home: Path) -> dict[str, Any]:
    """The served model as the model store describes it, asked through BentoML's own CLI."""
    result = subprocess.run(
        [str(BENTOML), "models", "get", f"{config.DEFAULT_MODEL_NAME}:latest", "-o", "json"],
        env=bentoml_env(model_home),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model_name(stored_model: dict[str, Any]) -> str:
    return stored_model["name"]


@pytest.fixture(scope="module")
def spec(model_home: Path, stored_model: dict[str, Any]) -> ModelSpec:
    """The served model's spec, as import_model.py stored it."""
    return load_spec(model_home / "models" / stored_model["name"] / stored_model["version"])


@pytest.fixture(scope="module")
def triton_client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


def expected_label(path: Path, spec: ModelSpec) -> str:
    below, above = spec.postprocess.labels
    return above if "digit3" in path.name else below


def input_of(spec: ModelSpec) -> tuple[str, int]:
    """The binary digit model's input: its name and its (square) side."""
    assert spec.input.height == spec.input.width
    return spec.input.name, spec.input.height


def predict(client: httpx.Client, path: Path) -> dict[str, Any]:
    response = client.post("/predict", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200, response.text
    return response.json()


def files_input(paths: list[Path] | list[bytes]) -> triton.InferInput:
    contents = [path.read_bytes() if isinstance(path, Path) else path for path in paths]
    tensor = triton.InferInput(FILES_INPUT, [len(contents)], "BYTES")
    tensor.set_data_from_numpy(np.array(contents, dtype=np.object_), binary_data=True)
    return tensor


def pixels_input(name: str, pixels: np.ndarray, datatype: str = "UINT8") -> triton.InferInput:
    tensor = triton.InferInput(name, list(pixels.shape), datatype)
    tensor.set_data_from_numpy(pixels, binary_data=True)
    return tensor


def infer_error(
    client: triton.InferenceServerClient, model: str, tensor: triton.InferInput
) -> tuple[int, str]:
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [tensor])
    return int(raised.value.status()), raised.value.message()


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


# -- health and metadata -----------------------------------------------------------------------


def test_health_and_readiness(
    triton_client: triton.InferenceServerClient, model_name: str, stored_model: dict[str, Any]
) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(model_name)
    assert triton_client.is_model_ready(model_name, model_version=stored_model["version"])
    assert not triton_client.is_model_ready("no_such_model")
    assert not triton_client.is_model_ready(model_name, model_version="no_such_version")


def test_not_ready_while_the_model_loads(tmp_path: Path) -> None:
    """A model whose warm-up takes seconds: /v2 readiness is 503 until it is done, then 200."""
    model = tmp_path / "slow.onnx"
    save_slow_model(model)
    home = tmp_path / "home"
    imported = run_import(home, str(model), "--name", "slow")
    assert imported.returncode == 0, imported.stderr
    server = Server(home, tmp_path / "serve.log", **SLOW_MODEL_ENV)
    try:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if client.is_server_live():
                    break
            except (ConnectionError, OSError):  # the port is not open yet
                time.sleep(0.1)
        not_ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        assert_error(not_ready, 503, "the model is not loaded yet", "retry shortly")
        assert not_ready.headers["retry-after"] == "1"
        model_not_ready = httpx.get(f"{server.url}/v2/models/slow/ready", timeout=5)
        assert_error(model_not_ready, 503, "the model is not loaded yet")
        assert not client.is_model_ready("slow")
        while not client.is_server_ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.is_model_ready("slow"), server.log()
        client.close()
    finally:
        server.stop()


def test_server_metadata_announces_its_extensions(
    triton_client: triton.InferenceServerClient, client: httpx.Client
) -> None:
    metadata = triton_client.get_server_metadata()  # GET /v2, no trailing slash
    assert metadata["name"] == "dlops"
    assert "binary_tensor_data" in metadata["extensions"]
    assert "classification" in metadata["extensions"]
    assert client.get("/v2/").status_code == 307  # Starlette sends /v2/ to /v2


def test_unknown_model_and_version_are_404(
    triton_client: triton.InferenceServerClient, model_name: str, stored_model: dict[str, Any]
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        triton_client.get_model_metadata("no_such_model")
    assert raised.value.status() == "404"
    assert f"serves '{model_name}'" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        triton_client.get_model_metadata(model_name, model_version="7")
    assert raised.value.status() == "404"
    assert stored_model["version"] in raised.value.message()
    status, message = infer_error(triton_client, "no_such_model", files_input([THREE]))
    assert status == 404
    assert "there is no model 'no_such_model'" in message


# -- inference with tritonclient ---------------------------------------------------------------


def test_uint8_pixels_match_predict(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    stored_model: dict[str, Any],
    spec: ModelSpec,
) -> None:
    """MNIST-normalised pixels (what /predict feeds the model) give /predict's answers."""
    name, side = input_of(spec)
    pixels = np.stack([to_model_input(path.read_bytes(), size=side) for path in (THREE, ZERO)])
    result = triton_client.infer(stored_model["name"], [pixels_input(name, pixels)])
    assert result.get_response()["model_version"] == stored_model["version"]
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [expected_label(THREE, spec), expected_label(ZERO, spec)]
    proba = result.as_numpy("proba")
    assert proba.dtype == np.float32
    assert proba.shape == (2, 1)
    # Binary FP32 is /predict's double rounded to float32.
    expected = [predict(client, path)["proba"] for path in (THREE, ZERO)]
    np.testing.assert_allclose(proba[:, 0], expected, rtol=1e-6)


def test_png_files_as_binary_bytes_batch(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    stored_model: dict[str, Any],
    spec: ModelSpec,
) -> None:
    result = triton_client.infer(stored_model["name"], [files_input(DIGITS)])
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [expected_label(path, spec) for path in DIGITS]
    expected = [predict(client, path)["proba"] for path in DIGITS]
    np.testing.assert_allclose(result.as_numpy("proba")[:, 0], expected, rtol=1e-6)


def test_other_formats_go_through_the_image_pipeline(
    triton_client: triton.InferenceServerClient, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    """JPEG, WebP, TIFF, a paper photo, a transparent canvas... as /predict reads them."""
    result = triton_client.infer(stored_model["name"], [files_input(VARIANTS)])
    labels = [label.decode() for label in result.as_numpy("label")]
    assert labels == [expected_label(THREE, spec)] * len(VARIANTS)


def test_outputs_as_json_in_the_order_asked(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    stored_model: dict[str, Any],
    spec: ModelSpec,
) -> None:
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("proba", binary_data=False),
    ]
    result = triton_client.infer(
        stored_model["name"], [files_input([THREE])], outputs=outputs, request_id="r-1"
    )
    response = result.get_response()
    assert response["id"] == "r-1"
    assert [output["name"] for output in response["outputs"]] == ["label", "proba"]
    # JSON carries /predict's very number, not a float32 rounding of it.
    assert response["outputs"][1]["data"] == [predict(client, THREE)["proba"]]
    only_label = triton_client.infer(
        stored_model["name"],
        [files_input([ZERO])],
        outputs=[triton.InferRequestedOutput("label", binary_data=True)],
    )
    assert [output["name"] for output in only_label.get_response()["outputs"]] == ["label"]
    assert only_label.as_numpy("label").tolist() == [expected_label(ZERO, spec).encode()]


def test_wrong_datatype_shape_and_input_name(
    triton_client: triton.InferenceServerClient, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    name, side = input_of(spec)
    model = stored_model["name"]
    floats = np.zeros((1, side, side), dtype=np.float32)
    status, message = infer_error(triton_client, model, pixels_input(name, floats, "FP32"))
    assert status == 400
    assert f"input '{name}' has datatype 'FP32'; expected UINT8" in message
    small = np.zeros((1, side - 1, side - 1), dtype=np.uint8)
    status, message = infer_error(triton_client, model, pixels_input(name, small))
    assert status == 400
    assert f"has shape [1, {side - 1}, {side - 1}]; expected [N, {side}, {side}]" in message
    status, message = infer_error(
        triton_client, model, pixels_input("pixels", np.zeros((1, side, side), np.uint8))
    )
    assert status == 400
    assert "there is no input 'pixels'" in message
    assert f"'{name}' UINT8 [N, {side}, {side}]" in message


def test_a_file_that_is_not_an_image(
    triton_client: triton.InferenceServerClient, stored_model: dict[str, Any]
) -> None:
    tensor = files_input([THREE, b"not an image"])
    status, message = infer_error(triton_client, stored_model["name"], tensor)
    assert status == 400
    assert message.startswith(f"input '{FILES_INPUT}' element 1 (of 2): the upload (12 bytes)")
    assert "expected a PNG, JPEG" in message


def test_too_many_images_is_413(
    triton_client: triton.InferenceServerClient, stored_model: dict[str, Any]
) -> None:
    tensor = files_input([THREE] * (config.MAX_BATCH_IMAGES + 1))
    status, message = infer_error(triton_client, stored_model["name"], tensor)
    assert status == 413
    assert f"the limit is {config.MAX_BATCH_IMAGES} per request" in message


MODEL_NAME = config.DEFAULT_MODEL_NAME


def dlops_samples(client: httpx.Client) -> dict[tuple[str, str], float]:
    """The default model's dlops_* counters on /metrics, keyed by (sample name, its other
    label's value)."""
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            labels = dict(sample.labels)
            ours = sample.name.startswith("dlops_") and labels.pop("model", None) == MODEL_NAME
            if ours and len(labels) == 1:
                samples[(sample.name, *labels.values())] = sample.value
    return samples


def test_v2_predictions_and_errors_are_in_the_metrics(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    stored_model: dict[str, Any],
    spec: ModelSpec,
) -> None:
    below, above = spec.postprocess.labels
    before = dlops_samples(client)
    triton_client.infer(stored_model["name"], [files_input([THREE, ZERO, THREE])])
    infer_error(triton_client, stored_model["name"], files_input([b"not an image"]))
    after = dlops_samples(client)

    def delta(name: str, label: str) -> float:
        return after.get((name, label), 0.0) - before.get((name, label), 0.0)

    assert delta("dlops_predictions_total", above) == 2
    assert delta("dlops_predictions_total", below) == 1
    assert delta("dlops_stage_duration_seconds_count", "decode") == 3
    assert delta("dlops_errors_total", "not_an_image") == 1


def test_v2_inference_is_answered_straight_and_counted_by_route(
    client: httpx.Client, model_name: str
) -> None:
    """POST .../infer goes straight to the protocol's app, as /predict goes to its route: it is
    counted in dlops_requests_total by route and status, where BentoML's own metrics no longer
    see it."""

    def counted(path: str, status: str) -> float:
        for family in text_string_to_metric_families(client.get("/metrics").text):
            for sample in family.samples:
                if sample.name == "dlops_requests_total" and sample.labels == {
                    "path": path,
                    "status": status,
                }:
                    return sample.value
        return 0.0

    route, versioned = "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"
    before = counted(route, "200"), counted(route, "400"), counted(versioned, "404")
    image = {"name": "image_file", "datatype": "BYTES", "shape": [1]}
    good = {
        "inputs": [
            {
                **image,
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(THREE.read_bytes()).decode()],
            }
        ]
    }
    assert client.post(infer_url(model_name), json=good).status_code == 200
    assert client.post(infer_url(model_name), json={"inputs": 3}).status_code == 400
    missing = client.post(f"/v2/models/{model_name}/versions/nosuchversion/infer", json=good)
    assert missing.status_code == 404 and "error" in missing.json()
    after = counted(route, "200"), counted(route, "400"), counted(versioned, "404")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


# -- raw JSON requests ----------------------------------------------------------------------------


def infer_url(model_name: str) -> str:
    return f"/v2/models/{model_name}/infer"


def test_json_uint8_tensor(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    name, side = input_of(spec)
    pixels = to_model_input(THREE.read_bytes(), size=side)
    request = {
        "id": "42",
        "inputs": [
            {
                "name": name,
                "datatype": "UINT8",
                "shape": [1, *pixels.shape],
                "data": pixels.tolist(),  # nested row-major lists
            }
        ],
    }
    response = client.post(infer_url(stored_model["name"]), json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"] == "42"
    assert body["model_name"] == stored_model["name"]
    proba, label = body["outputs"]
    assert proba == {
        "name": "proba",
        "datatype": "FP32",
        "shape": [1, 1],
        "data": [predict(client, THREE)["proba"]],
    }
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [1],
        "data": [expected_label(THREE, spec)],
    }


def test_json_bytes_base64_and_plain_strings(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in (ZERO, THREE)]
    files = {"name": FILES_INPUT, "datatype": "BYTES", "shape": [2], "data": encoded}
    base64_files = {**files, "parameters": {"content_type": "base64"}}
    response = client.post(infer_url(stored_model["name"]), json={"inputs": [base64_files]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][1]["data"] == [
        expected_label(ZERO, spec),
        expected_label(THREE, spec),
    ]
    # Without the flag a string is its own UTF-8 bytes: base64 text is no image, and the
    # error says how to send files in JSON.
    response = client.post(infer_url(stored_model["name"]), json={"inputs": [files]})
    assert_error(
        response, 400, "element 0 (of 2): the upload", '"content_type": "base64"', "binary tensor"
    )
    broken = {**base64_files, "data": ["not base64!", encoded[1]]}
    response = client.post(infer_url(stored_model["name"]), json={"inputs": [broken]})
    assert_error(response, 400, "element 0 is not valid base64")


def test_files_shaped_as_triton_s_batching_models_take_them(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    """[N, 1], what a client of a Triton model with max_batch_size and dims [1] sends, is N
    files too; any other second dimension is refused."""
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in (ZERO, THREE)]
    files = {
        "name": FILES_INPUT,
        "datatype": "BYTES",
        "parameters": {"content_type": "base64"},
        "data": encoded,
    }
    response = client.post(
        infer_url(stored_model["name"]), json={"inputs": [{**files, "shape": [2, 1]}]}
    )
    assert response.status_code == 200, response.text
    label = response.json()["outputs"][1]
    assert label["shape"] == [2]
    assert label["data"] == [expected_label(ZERO, spec), expected_label(THREE, spec)]
    response = client.post(
        infer_url(stored_model["name"]), json={"inputs": [{**files, "shape": [1, 2]}]}
    )
    assert_error(response, 400, "has shape [1, 2]; expected [N]", "or [N, 1]")


def test_binary_tensor_data_by_hand(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    """The extension's framing, written out: JSON header, then length-prefixed BYTES."""
    png = THREE.read_bytes()
    data = struct.pack("<I", len(png)) + png
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": FILES_INPUT,
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = client.post(
        infer_url(stored_model["name"]),
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    outputs = json.loads(response.content[:length])["outputs"]
    proba_size = outputs[0]["parameters"]["binary_data_size"]
    assert proba_size == 4
    (proba,) = struct.unpack("<f", response.content[length : length + 4])
    assert proba == pytest.approx(predict(client, THREE)["proba"], rel=1e-6)
    label = expected_label(THREE, spec).encode()
    assert response.content[length + 4 :] == struct.pack("<I", len(label)) + label
    # A header length that cuts the binary data short, and one past the body's end.
    response = client.post(
        infer_url(stored_model["name"]),
        content=header + data[:-1],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert_error(response, 400, f"declares binary_data_size {len(data)}, but {len(data) - 1} bytes")
    response = client.post(
        infer_url(stored_model["name"]),
        content=header,
        headers={"Inference-Header-Content-Length": str(len(header) + 1)},
    )
    assert_error(response, 400, "Inference-Header-Content-Length is")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "the inference request is not valid JSON"),
        (b"[]", "the inference request is a JSON list"),
        (b"[" * 100_000 + b"]" * 100_000, "maximum recursion depth exceeded"),
        (b'{"inputs": [{"name": ["image_file"]}]}', "there is no input ['image_file']"),
        (b'{"inputs": []}', "the request has 0 inputs; send exactly one input"),
        (
            b'{"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [1]}]}',
            "has neither 'data' nor a 'binary_data_size' parameter",
        ),
        (
            b'{"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [2], '
            b'"data": ["a"]}]}',
            "'data' holds 1 strings; shape [2] needs 2",
        ),
        (
            b'{"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [1], '
            b'"data": ["a"]}], "outputs": [{"name": "logit"}]}',
            "there is no output 'logit'",
        ),
    ],
)
def test_malformed_requests(
    client: httpx.Client, stored_model: dict[str, Any], body: bytes, fragment: str
) -> None:
    response = client.post(infer_url(stored_model["name"]), content=body)
    assert_error(response, 400, fragment)


def test_json_uint8_values_are_checked(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    name, side = input_of(spec)
    tensor = {"name": name, "datatype": "UINT8", "shape": [1, side, side]}
    url = infer_url(stored_model["name"])
    too_big = [256] * side * side
    assert_error(
        client.post(url, json={"inputs": [{**tensor, "data": too_big}]}),
        400,
        "UINT8 values must be from 0 to 255; found 256 to 256",
    )
    floats = [0.5] * side * side
    assert_error(
        client.post(url, json={"inputs": [{**tensor, "data": floats}]}),
        400,
        "whole numbers from 0 to 255; it holds decimal numbers",
    )
    short = [0] * (side * side - 1)
    assert_error(
        client.post(url, json={"inputs": [{**tensor, "data": short}]}),
        400,
        f"'data' holds {side * side - 1} numbers; UINT8 [1, {side}, {side}] needs {side * side}",
    )


def test_wrong_method_and_oversized_body(client: httpx.Client, model_name: str) -> None:
    assert_error(client.get(infer_url(model_name)), 405, "use POST")
    assert_error(
        client.post("/v2/health/live"), 405, "POST is not allowed on /v2/health/live: use GET"
    )
    gzipped = client.post(
        infer_url(model_name), content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"}
    )
    assert_error(gzipped, 415, "Content-Encoding 'gzip' is not accepted")
    oversized = b" " * (config.MAX_BODY_BYTES + 1)
    assert_error(client.post(infer_url(model_name), content=oversized), 413, "the limit is")


def test_classification_parameter_is_checked(
    client: httpx.Client, stored_model: dict[str, Any]
) -> None:
    files = {"name": FILES_INPUT, "datatype": "BYTES", "shape": [1], "data": ["a"]}
    for value in (0, -2, "2", 1.5, True):
        outputs = [{"name": "proba", "parameters": {"classification": value}}]
        response = client.post(
            infer_url(stored_model["name"]), json={"inputs": [files], "outputs": outputs}
        )
        assert_error(
            response,
            400,
            "output 'proba': the parameter 'classification' must be a whole number of classes",
        )


def test_classification_in_json(
    client: httpx.Client, stored_model: dict[str, Any], spec: ModelSpec
) -> None:
    """A binary model ranks as two classes: 0 the negative label (1 - p), 1 the positive (p)."""
    png = base64.b64encode(THREE.read_bytes()).decode()
    files = {
        "name": FILES_INPUT,
        "datatype": "BYTES",
        "shape": [1],
        "data": [png],
        "parameters": {"content_type": "base64"},
    }
    outputs = [
        {"name": "proba", "parameters": {"classification": 2}},
        {"name": "label"},
    ]
    response = client.post(
        infer_url(stored_model["name"]), json={"inputs": [files], "outputs": outputs}
    )
    assert response.status_code == 200, response.text
    ranked, label = response.json()["outputs"]
    proba = predict(client, THREE)["proba"]
    below, above = spec.postprocess.labels
    assert ranked == {
        "name": "proba",
        "datatype": "BYTES",
        "shape": [1, 2],
        "data": [f"{proba:f}:1:{above}", f"{1 - proba:f}:0:{below}"],
    }
    assert label["data"] == [above]


# -- every model: the binary digits, the 10-class digits, the document-orientation model ------

# What each model is known to take and answer, independently of the importer.
KNOWN = {
    "binary": ("UINT8", [-1, 28, 28], 1),
    "digits10": ("UINT8", [-1, 28, 28], 10),
    "orientation": ("FP32", [-1, 3, 224, 224], 4),
}
KNOWN_LABELS = {
    "digits10": tuple(str(digit) for digit in range(10)),
    "orientation": ("0", "90", "180", "270"),
}
SERVERS = {"binary": "server", "digits10": "digits10_server", "orientation": "orientation_server"}
MODEL_NAMES = {
    "binary": config.DEFAULT_MODEL_NAME,
    "digits10": "digits_10",
    "orientation": "orientation",
}
DIGIT_SAMPLES = [FIXTURES / "digits" / f"test0{n}00_digit{n}.png" for n in (0, 3, 7, 9)]


@dataclass
class Served:
    """One of the three models behind its own `bentoml serve`, with clients and sample files."""

    key: str
    name: str
    version: str
    spec: ModelSpec
    samples: list[bytes]
    client: httpx.Client
    triton: triton.InferenceServerClient

    @property
    def ranked_classes(self) -> int:
        return 2 if self.spec.postprocess.is_binary else self.spec.postprocess.classes

    def predicted(self, file: bytes) -> tuple[str, np.ndarray]:
        """POST /predict's label and probabilities ([P(positive)] if binary, else all K)."""
        response = self.client.post("/predict?top_k=0", files={"file": ("image", file)})
        assert response.status_code == 200, response.text
        answer = response.json()
        if self.spec.postprocess.is_binary:
            return answer["label"], np.array([answer["proba"]])
        row = np.zeros(self.spec.postprocess.classes)
        for ranked in answer["top_k"]:
            row[ranked["index"]] = ranked["proba"]
        return answer["label"], row

    def model_input(self, files: list[bytes]) -> np.ndarray:
        """The files preprocessed as /predict does them, in-process, by the stored spec."""
        preprocessor = Preprocessor(self.spec)
        return np.stack(
            [preprocessor(decode_image(file, reduction=preprocessor.reduction)) for file in files]
        )


def samples_for(key: str) -> list[bytes]:
    if key == "orientation":  # a page turned each way, as JPEG and PNG
        return [
            documents.document(seed, rotation, fmt)
            for seed, rotation, fmt in (
                (1, 0, "JPEG"),
                (2, 90, "PNG"),
                (3, 180, "JPEG"),
                (4, 270, "PNG"),
            )
        ]
    return [path.read_bytes() for path in DIGIT_SAMPLES]


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    key = request.param
    if key == "digits10" and not DIGITS_10_MODEL.is_file():
        pytest.skip(f"{DIGITS_10_MODEL} is not trained yet (python -m training.train_digits10)")
    server: Server = request.getfixturevalue(SERVERS[key])
    name = MODEL_NAMES[key]
    # The server's own BentoML home (tests/conftest.py, private_home) links the model store.
    models = server.log_path.parent / "bentoml_home" / "models" / name
    version = (models / "latest").read_text().strip()
    spec = load_spec(models / version)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        triton_client = triton.InferenceServerClient(
            server.url.removeprefix("http://"), network_timeout=60
        )
        yield Served(key, name, version, spec, samples_for(key), client, triton_client)
        triton_client.close()


def test_metadata_shows_the_real_input(served: Served) -> None:
    datatype, shape, classes = KNOWN[served.key]
    source = served.spec.input
    assert (V2_DATATYPES[source.dtype], source.shape(-1), served.spec.postprocess.classes) == (
        datatype,
        shape,
        classes,
    )
    if served.key in KNOWN_LABELS:
        assert served.spec.postprocess.labels == KNOWN_LABELS[served.key]
    for version in ("", served.version):
        metadata = served.triton.get_model_metadata(served.name, model_version=version)
        assert metadata == {
            "name": served.name,
            "versions": [served.version],
            "platform": "onnxruntime",
            "inputs": [
                {"name": source.name, "datatype": datatype, "shape": shape},
                {"name": FILES_INPUT, "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": [
                {"name": "proba", "datatype": "FP32", "shape": [-1, classes]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {"execution_providers": ["CPUExecutionProvider"]},
        }


def test_image_files_agree_with_predict(served: Served) -> None:
    expected = [served.predicted(file) for file in served.samples]
    result = served.triton.infer(served.name, [files_input(served.samples)])
    assert [label.decode() for label in result.as_numpy("label")] == [
        label for label, _ in expected
    ]
    proba = result.as_numpy("proba")
    assert proba.dtype == np.float32
    assert proba.shape == (len(served.samples), served.spec.postprocess.classes)
    np.testing.assert_allclose(proba, np.stack([row for _, row in expected]), rtol=1e-6, atol=1e-7)
    # As JSON, proba carries /predict's very doubles.
    outputs = [triton.InferRequestedOutput("proba", binary_data=False)]
    result = served.triton.infer(served.name, [files_input(served.samples)], outputs=outputs)
    (output,) = result.get_response()["outputs"]
    assert output["data"] == np.concatenate([row for _, row in expected]).tolist()


def test_the_models_own_tensor_as_it_is(served: Served) -> None:
    """The model's input, in its own dtype and shape (FP32 [N, 3, 224, 224] for orientation)."""
    datatype, _, _ = KNOWN[served.key]
    batch = served.model_input(served.samples)
    assert batch.dtype == np.dtype(V2_DATATYPES_NUMPY[datatype])
    result = served.triton.infer(
        served.name, [pixels_input(served.spec.input.name, batch, datatype)]
    )
    expected = [served.predicted(file) for file in served.samples]
    assert [label.decode() for label in result.as_numpy("label")] == [
        label for label, _ in expected
    ]
    np.testing.assert_allclose(
        result.as_numpy("proba"), np.stack([row for _, row in expected]), rtol=1e-5, atol=1e-6
    )


def parse_entry(entry: bytes) -> tuple[str, int, str]:
    score, index, label = entry.decode().split(":", 2)
    return score, int(index), label


@pytest.mark.parametrize("class_count", [1, 3, 100])
def test_classification_with_tritonclient(served: Served, class_count: int) -> None:
    """``class_count=k``: BYTES [N, k] of "score:index:label", best first, k capped at K."""
    outputs = [
        triton.InferRequestedOutput("proba", class_count=class_count),
        triton.InferRequestedOutput("label", class_count=class_count),
    ]
    result = served.triton.infer(served.name, [files_input(served.samples)], outputs=outputs)
    ranked = result.as_numpy("proba")
    k = min(class_count, served.ranked_classes)
    assert ranked.shape == (len(served.samples), k)
    # On `label` the extension answers the same ranking.
    assert result.as_numpy("label").tolist() == ranked.tolist()
    labels = served.spec.postprocess.labels
    for file, row in zip(served.samples, ranked, strict=True):
        label, probabilities = served.predicted(file)
        if served.spec.postprocess.is_binary:  # two classes: negative (1 - p), positive (p)
            probabilities = np.array([1 - probabilities[0], probabilities[0]])
        entries = [parse_entry(entry) for entry in row]
        order = np.argsort(-probabilities, kind="stable")[:k].tolist()
        assert [index for _, index, _ in entries] == order
        assert [name for _, _, name in entries] == [labels[index] for index in order]
        assert [score for score, _, _ in entries] == [
            f"{probabilities[index]:f}" for index in order
        ]
        scores = [float(score) for score, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        if not served.spec.postprocess.is_binary or served.spec.postprocess.threshold == 0.5:
            assert entries[0][2] == label


def test_classification_beside_plain_outputs(served: Served) -> None:
    outputs = [
        triton.InferRequestedOutput("label"),
        triton.InferRequestedOutput("proba", binary_data=False, class_count=2),
    ]
    result = served.triton.infer(served.name, [files_input(served.samples[:2])], outputs=outputs)
    assert result.as_numpy("label").shape == (2,)
    (_, ranked) = result.get_response()["outputs"]
    assert ranked["datatype"] == "BYTES"
    assert ranked["shape"] == [2, 2]
    assert all(isinstance(entry, str) and entry.count(":") >= 2 for entry in ranked["data"])


def test_wrong_tensor_dtype_and_shape_are_clear_400s(served: Served) -> None:
    datatype, shape, _ = KNOWN[served.key]
    name = served.spec.input.name
    dimensions = shape[1:]
    expected_shape = "[N, " + ", ".join(map(str, dimensions)) + "]"
    other = "FP32" if datatype == "UINT8" else "UINT8"
    wrong_type = np.zeros([1, *dimensions], dtype=V2_DATATYPES_NUMPY[other])
    status, message = infer_error(served.triton, served.name, pixels_input(name, wrong_type, other))
    assert status == 400
    assert f"input '{name}' has datatype '{other}'; expected {datatype}" in message
    assert f"'{name}' {datatype} {expected_shape}" in message
    for bad in ([1, *dimensions[:-1], dimensions[-1] + 1], dimensions, [1, *reversed(dimensions)]):
        if bad == [1, *dimensions]:
            continue  # a square, symmetric shape reversed is itself
        tensor = np.zeros(bad, dtype=V2_DATATYPES_NUMPY[datatype])
        status, message = infer_error(
            served.triton, served.name, pixels_input(name, tensor, datatype)
        )
        assert status == 400
        assert f"input '{name}' has shape {bad}; expected {expected_shape}" in message
    if datatype != "UINT8":  # a float tensor must hold finite numbers
        tensor = np.full([1, *dimensions], np.nan, dtype=V2_DATATYPES_NUMPY[datatype])
        status, message = infer_error(
            served.triton, served.name, pixels_input(name, tensor, datatype)
        )
        assert status == 400
        assert "holds NaN or infinite values" in message
