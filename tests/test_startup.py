"""Start-up: the server answers health probes while the model loads, and loses no request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import onnx
from onnx import TensorProto, helper

from dlops.config import MODEL_WAIT_SECONDS
from tests.conftest import FIXTURES, Server, run_import

SIDE = 3000  # a 3000x3000 float matrix; each product below costs ~54 GFLOP
PRODUCTS = 3
# Its 3000x3000 intermediates stay in onnxruntime's arena: ~160 MiB, counted in the worker's
# memory budget, which must have room for them.
SLOW_MODEL_ENV = {"DLOPS_MODEL_NAME": "slow", "DLOPS_MAX_WORKER_MEMORY": "1024"}


def save_slow_model(path: Path, side: int = SIDE, products: int = PRODUCTS) -> None:
    """A model with the served signature whose every inference (the warm-up too) takes seconds.

    The matrix depends on the input, so onnxruntime cannot fold the work away at load time.
    """
    nodes = [
        helper.make_node("Cast", ["input"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["mean"], keepdims=0),
        helper.make_node(
            "ConstantOfShape",
            ["side"],
            ["ones"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0001]),
        ),
        helper.make_node("Add", ["ones", "mean"], ["m0"]),
    ]
    for step in range(products):
        # Tanh keeps the values finite whatever the input (the importer's trial batch is random).
        nodes.append(helper.make_node("MatMul", [f"m{step}", "m0"], [f"p{step}"]))
        nodes.append(helper.make_node("Tanh", [f"p{step}"], [f"m{step + 1}"]))
    nodes += [
        helper.make_node("ReduceMean", [f"m{products}"], ["busy"], keepdims=0),
        helper.make_node("ReduceMean", ["pixels"], ["per_image"], axes=[1, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["per_image", "axis"], ["column"]),
        helper.make_node("Mul", ["column", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "busy"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            helper.make_tensor("side", TensorProto.INT64, [2], [side, side]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_readyz_is_503_while_the_model_loads_and_early_requests_wait(tmp_path: Path) -> None:
    model = tmp_path / "slow.onnx"
    save_slow_model(model)
    home = tmp_path / "home"
    imported = run_import(home, str(model), "--name", "slow")
    assert imported.returncode == 0, imported.stderr
    digit = next((FIXTURES / "digits").glob("*.png")).read_bytes()
    server = Server(home, tmp_path / "serve.log", **SLOW_MODEL_ENV)
    try:
        seen: list[int] = []
        early_answer: list[httpx.Response] = []
        early: threading.Thread | None = None
        sent_at = ready_at = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{server.url}/readyz", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            seen.append(status)
            if status == 503 and early is None:
                assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
                early = threading.Thread(
                    target=lambda: early_answer.append(
                        httpx.post(
                            f"{server.url}/predict", files={"file": ("d.png", digit)}, timeout=60
                        )
                    )
                )
                sent_at = time.monotonic()
                early.start()
            if status == 200:
                ready_at = time.monotonic()
                break
            time.sleep(0.05)
        assert seen and seen[-1] == 200, (seen, server.log())
        assert 503 in seen, seen
        assert set(seen) <= {503, 200}, seen
        assert early is not None
        early.join(timeout=60)
        assert early_answer, server.log()
        # The early request waits for the model up to MODEL_WAIT_SECONDS, then gets a 503; on a
        # busy machine the load can take longer than that, so which answer is right depends on
        # when the model became ready (give or take a second of polling and scheduling).
        waited = ready_at - sent_at
        answer = early_answer[0]
        if waited < MODEL_WAIT_SECONDS - 1:
            assert answer.status_code == 200, (waited, server.log())
            assert set(answer.json()) == {"proba", "label"}
        elif waited > MODEL_WAIT_SECONDS + 1:
            assert answer.status_code == 503, (waited, answer.text)
            assert list(answer.json()) == ["error"]
        else:
            assert answer.status_code in (200, 503), (waited, answer.text)
    finally:
        server.stop()
