"""Several models in one real `bentoml serve`: listed, loaded, reloaded and unloaded through the
Open Inference Protocol's repository extension, with tritonclient and under load."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from bench.load import LoadResult, multipart_body, run_hey
from tests.conftest import (
    BENTOML,
    DIGITS_10_MODEL,
    FIXTURES,
    MODEL,
    ROOT,
    TEST_API_KEY,
    Server,
    bentoml_env,
    free_port,
    orientation_model_path,
    run_import,
    serving,
)
from tests.test_import_model import imported as tag_imported

THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()
MODELS = "binary_classifier_3,digits_10,orientation"
RELOADS = 5
CLIENTS = 16
# Enough requests that the load outlasts the reloads on any machine slower than ~5,000 rps.
LOAD_REQUESTS = 30_000


def imported(home: Path, *args: str) -> str:
    """Import with the real CLI; the stored version."""
    return tag_imported(run_import(home, *args)).split(":")[1]


def big_weights_model(path: Path) -> Path:
    """A classifier holding ~160 MB of weights: past what the worker has room for."""
    rng = np.random.default_rng(0)
    hidden = 13_000
    weights = [
        numpy_helper.from_array(rng.random((3 * 32 * 32, hidden), np.float32), "w1"),
        numpy_helper.from_array(rng.random((hidden, 3), np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with the three models, a second version of two of them and a model too big."""
    home = tmp_path_factory.mktemp("repository_home")
    # Imported first, so that the plain import after it is the latest.
    strict = imported(home, str(MODEL), "--threshold", "0.999")
    plain = imported(home, str(MODEL))
    digits = imported(home, str(DIGITS_10_MODEL))
    digits_top3 = imported(home, str(DIGITS_10_MODEL), "--top-k", "3")
    imported(home, str(orientation_model_path()), "--name", "orientation")
    big = big_weights_model(tmp_path_factory.mktemp("big") / "big.onnx")
    imported(home, str(big), "--name", "big")
    return {"home": home, "strict": strict, "plain": plain, "digits": digits, "top3": digits_top3}


@pytest.fixture(scope="module")
def three(versions: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The three models in one server, the repository extension on; digits_10 pinned to the
    version imported first (its latest is the --top-k 3 one)."""
    log = tmp_path_factory.mktemp("three") / "serve.log"
    models = f"binary_classifier_3,digits_10:{versions['digits']},orientation"
    yield from serving(Server(versions["home"], log, DLOPS_MODELS=models, DLOPS_REPOSITORY_API="1"))


@pytest.fixture
def client(three: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=three.url, timeout=60) as session:
        yield session


@pytest.fixture
def triton_client(three: Server) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(three.url.removeprefix("http://"), network_timeout=60)
    yield connection
    connection.close()


def predict(client: httpx.Client, path: str = "/predict") -> httpx.Response:
    return client.post(path, files={"file": ("3.png", THREE)})


def served(client: httpx.Client) -> dict[str, str]:
    """name -> version of what GET /models lists."""
    listing = client.get("/models").json()
    return {model["name"]: model["version"] for model in listing["models"]}


def test_three_models_answer_at_once(client: httpx.Client, versions: dict[str, Any]) -> None:
    listing = client.get("/models").json()
    assert listing["default"] == "binary_classifier_3"
    by_name = {model["name"]: model for model in listing["models"]}
    assert list(by_name) == ["binary_classifier_3", "digits_10", "orientation"]
    assert by_name["digits_10"]["version"] == versions["digits"]
    assert by_name["digits_10"]["classes"] == 10 and by_name["orientation"]["classes"] == 4
    assert all(model["state"] == "READY" for model in by_name.values())
    assert by_name["orientation"]["memory_mib"]["resident"] > 0
    worker = listing["worker"]
    assert worker["models_mib"] >= sum(m["memory_mib"]["resident"] for m in by_name.values()) - 1

    assert predict(client).json()["label"] == "3"  # the default: the seed's contract
    assert predict(client, "/models/binary_classifier_3/predict").json()["label"] == "3"
    digits = predict(client, "/models/digits_10/predict").json()
    assert digits["label"] == "3" and len(digits["top_k"]) == 5
    assert predict(client, "/models/orientation/predict").json()["label"] in {
        "0",
        "90",
        "180",
        "270",
    }
    batch = client.post(
        "/models/digits_10/predict_batch", files=[("file", ("a.png", THREE))] * 2
    ).json()
    assert [answer["label"] for answer in batch] == ["3", "3"]
    for name in by_name:
        assert client.get(f"/v2/models/{name}/ready").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_an_unknown_model_is_a_404_naming_the_models(client: httpx.Client) -> None:
    for response in (
        predict(client, "/models/nope/predict"),
        client.get("/v2/models/nope"),
        client.post("/v2/models/nope/infer", json={"inputs": []}),
    ):
        assert response.status_code == 404, response.text
        message = response.json()["error"]
        assert "'nope'" in message and "'digits_10'" in message and "'orientation'" in message


def test_a_model_route_takes_only_post(client: httpx.Client) -> None:
    response = client.get("/models/digits_10/predict")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": "GET is not allowed on /models/digits_10/predict: use POST"}
    assert client.get("/models/digits_10/nothing").status_code == 404


def test_every_model_has_its_own_metrics(client: httpx.Client) -> None:
    predict(client, "/models/digits_10/predict")
    text = client.get("/metrics").text
    models = {
        sample.labels.get("model")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dlops_stage_duration_seconds_count"
    }
    assert {"binary_classifier_3", "digits_10"} <= models


def test_tritonclient_lists_unloads_and_loads(
    triton_client: triton.InferenceServerClient, client: httpx.Client
) -> None:
    index = {entry["name"]: entry for entry in triton_client.get_model_repository_index()}
    assert {name: index[name]["state"] for name in ("digits_10", "orientation", "big")} == {
        "digits_10": "READY",
        "orientation": "READY",
        "big": "UNAVAILABLE",  # in the store, not loaded
    }
    triton_client.unload_model("orientation")
    assert not triton_client.is_model_ready("orientation")
    assert predict(client, "/models/orientation/predict").status_code == 404
    index = {entry["name"]: entry for entry in triton_client.get_model_repository_index()}
    assert (index["orientation"]["state"], index["orientation"]["reason"]) == (
        "UNAVAILABLE",
        "unloaded",
    )
    assert client.get("/readyz").status_code == 200  # an unloaded model is not waited for

    triton_client.load_model("orientation")
    assert triton_client.is_model_ready("orientation")
    assert predict(client, "/models/orientation/predict").status_code == 200


def test_a_reload_by_version_swaps_the_answers(
    client: httpx.Client, versions: dict[str, Any]
) -> None:
    load = "/v2/repository/models/digits_10/load"
    response = client.post(load, json={"parameters": {"version": versions["top3"]}})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "digits_10", "version": versions["top3"], "state": "READY"}
    assert len(predict(client, "/models/digits_10/predict").json()["top_k"]) == 3
    response = client.post(load, json={"parameters": {"version": versions["digits"]}})
    assert response.status_code == 200, response.text
    assert len(predict(client, "/models/digits_10/predict").json()["top_k"]) == 5


def requests_answered(client: httpx.Client) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "dlops_requests_total" and sample.labels.get("path") == "/predict"
    )


def test_five_reloads_under_load_fail_no_request(
    three: Server, client: httpx.Client, versions: dict[str, Any], tmp_path: Path, hey: str
) -> None:
    body = tmp_path / "three.multipart"
    body.write_bytes(multipart_body(THREE))
    outcome: dict[str, LoadResult] = {}
    load = threading.Thread(
        target=lambda: outcome.update(
            result=run_hey(hey, f"{three.url}/predict", body, LOAD_REQUESTS, CLIENTS)
        )
    )
    before = requests_answered(client)
    load.start()
    while requests_answered(client) == before:  # the load is under way
        assert load.is_alive()
    labels = []
    for swap in range(RELOADS):
        version = versions["strict"] if swap % 2 == 0 else versions["plain"]
        response = client.post(
            "/v2/repository/models/binary_classifier_3/load",
            json={"parameters": {"version": version}},
        )
        assert response.status_code == 200, response.text
        labels.append(predict(client).json()["label"])
    assert load.is_alive(), "the load ended before the reloads: raise LOAD_REQUESTS"
    load.join()
    result = outcome["result"]
    assert result.statuses == {"200": LOAD_REQUESTS}, result.statuses
    # threshold 0.999 answers "no 3" for this 3 (P = 0.989): each swap took effect at once.
    assert labels == ["no 3", "3", "no 3", "3", "no 3"]
    assert served(client)["binary_classifier_3"] == versions["strict"]
    client.post(
        "/v2/repository/models/binary_classifier_3/load",
        json={"parameters": {"version": versions["plain"]}},
    )


def test_a_failed_load_leaves_the_old_version_serving(
    client: httpx.Client, versions: dict[str, Any]
) -> None:
    before = served(client)
    missing = client.post("/v2/repository/models/nope/load")
    assert missing.status_code == 404 and "not in the BentoML model store" in missing.text
    no_version = client.post(
        "/v2/repository/models/digits_10/load", json={"parameters": {"version": "v404"}}
    )
    assert no_version.status_code == 404, no_version.text
    # A damaged version: its stored file no longer matches the sha256 recorded at import.
    stored = versions["home"] / "models" / "digits_10" / versions["top3"] / "model.onnx"
    intact = stored.read_bytes()
    stored.write_bytes(intact[:1000])
    try:
        damaged = client.post(
            "/v2/repository/models/digits_10/load",
            json={"parameters": {"version": versions["top3"]}},
        )
    finally:
        stored.write_bytes(intact)
    assert damaged.status_code == 422, damaged.text
    assert "damaged" in damaged.json()["error"]
    assert served(client) == before
    assert len(predict(client, "/models/digits_10/predict").json()["top_k"]) == 5


def test_a_model_past_the_memory_budget_is_refused_with_the_figures(
    client: httpx.Client,
) -> None:
    before = served(client)
    response = client.post("/v2/repository/models/big/load")
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert "not enough memory" in message and "DLOPS_MAX_WORKER_MEMORY" in message
    assert re.search(r"takes \d+ MiB resident", message), message
    assert served(client) == before and predict(client).status_code == 200


def test_bad_repository_requests_are_clear_400s(client: httpx.Client) -> None:
    cases = [
        ("/v2/repository/models/Bad%20Name!/load", None, "not a model name"),
        ("/v2/repository/models/digits_10/load", {"parameters": {"version": "../x"}}, "version"),
        ("/v2/repository/models/digits_10/load", {"parameters": {"config": "{}"}}, "config"),
        ("/v2/repository/index", {"ready": "yes"}, "expected true or false"),
    ]
    for path, payload, fragment in cases:
        response = client.post(path, json=payload)
        assert response.status_code == 400, (path, response.text)
        assert fragment in response.json()["error"]
    bad_json = client.post("/v2/repository/index", content=b"{not json")
    assert bad_json.status_code == 400 and "JSON object" in bad_json.json()["error"]


def test_repository_calls_are_refused_unless_enabled(server: Server) -> None:
    """The session's plain server: no API_KEY, no DLOPS_REPOSITORY_API."""
    response = httpx.post(f"{server.url}/v2/repository/index", timeout=30)
    assert response.status_code == 403
    message = response.json()["error"]
    assert "API_KEY" in message and "DLOPS_REPOSITORY_API=1" in message


def test_with_a_key_repository_calls_need_it(keyed_server: Server) -> None:
    url = f"{keyed_server.url}/v2/repository/index"
    assert httpx.post(url, timeout=30).status_code == 401
    keyed = httpx.post(url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=30)
    assert keyed.status_code == 200
    assert [entry["state"] for entry in keyed.json()] == ["READY"]


def test_several_workers_answer_once_all_serve_the_change(
    versions: dict[str, Any], tmp_path: Path
) -> None:
    server = Server(
        versions["home"],
        tmp_path / "serve.log",
        DLOPS_MODELS="binary_classifier_3,digits_10",
        DLOPS_WORKERS="2",
        DLOPS_REPOSITORY_API="1",
    )

    def listing(_: int) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=30) as fresh:  # a new connection
            return fresh.get("/models").json()

    for _running in serving(server):
        unloaded = httpx.post(f"{server.url}/v2/repository/models/digits_10/unload", timeout=60)
        assert unloaded.status_code == 200, unloaded.text

        pids: set[int] = set()
        for _ in range(10):  # until both workers have answered
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(listing, range(8)))
            assert all([m["name"] for m in a["models"]] == ["binary_classifier_3"] for a in answers)
            pids |= {answer["worker"]["pid"] for answer in answers}
            if len(pids) == 2:
                break
        assert len(pids) == 2, "one worker answered every connection"


def test_a_model_that_fails_to_load_at_start_stops_the_server(
    versions: dict[str, Any], tmp_path: Path
) -> None:
    """As Triton's --exit-on-error: a non-zero exit with the reason, not a server that answers
    503 for ever."""
    result = subprocess.run(
        [str(BENTOML), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=bentoml_env(
            versions["home"], DLOPS_MODELS="binary_classifier_3,big", PYTHONUNBUFFERED="1"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dlops: the model big:") and "not enough memory" in last, last
    assert last.endswith("the server stopped"), last
