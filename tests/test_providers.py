"""DLOPS_PROVIDERS: onnxruntime's execution providers in order of preference, and never a silent
fallback to the CPU when one asked for does not load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dlops.model.resolve import Overrides, resolve_spec
from dlops.pipeline.inference import (
    Classifier,
    ProviderUnavailable,
    open_session,
    provider_options,
)
from tests.conftest import BENTOML, MODEL, ROOT, Server, bentoml_env, free_port

CPU = "CPUExecutionProvider"


def providers_setting(value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from dlops import config; print(config.PROVIDERS)"],
        cwd=ROOT,
        env={**bentoml_env(ROOT), "DLOPS_PROVIDERS": value},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_setting_takes_short_or_full_names_in_order() -> None:
    chosen = providers_setting("openvino, CPU,cpu")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == "('OpenVINOExecutionProvider', 'CPUExecutionProvider')"
    assert providers_setting("CUDAExecutionProvider").stdout.strip() == (
        "('CUDAExecutionProvider',)"
    )


def test_an_unknown_provider_stops_the_start_with_the_known_names() -> None:
    refused = providers_setting("gpu")
    assert refused.returncode != 0
    assert "DLOPS_PROVIDERS: 'gpu' is not an execution provider" in refused.stderr
    assert "cuda" in refused.stderr and "openvino" in refused.stderr


def test_the_cpu_by_default() -> None:
    spec = resolve_spec(MODEL, Overrides()).spec
    assert Classifier(MODEL, spec).providers == (CPU,)


def test_openvino_gets_the_worker_s_threads_the_others_no_options() -> None:
    # OpenVINO ignores intra_op_num_threads: without its own option a worker takes every core.
    assert provider_options("OpenVINOExecutionProvider", 2) == {"num_of_threads": "2"}
    assert provider_options("CPUExecutionProvider", 2) == {}
    assert provider_options("CUDAExecutionProvider", 1) == {}


def test_a_provider_this_onnxruntime_lacks_is_refused() -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # this machine's build
    with pytest.raises(ProviderUnavailable) as refused:
        open_session(MODEL, providers=("CUDAExecutionProvider", CPU))
    message = str(refused.value)
    assert "CUDAExecutionProvider" in message and "onnxruntime-gpu" in message
    assert CPU in message  # what this build has


def test_a_provider_that_fails_to_initialise_is_refused_not_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime drops a provider that does not initialise (no device) and runs on the CPU: a
    build that lists CUDA, on a machine where CUDA cannot start, does exactly that."""
    real_session = ort.InferenceSession

    def without_the_device(path: str, options: Any, providers: list[str]) -> Any:
        return real_session(path, options, providers=[CPU])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", CPU])
    monkeypatch.setattr(ort, "InferenceSession", without_the_device)
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider, which did not load"):
        open_session(MODEL, providers=("CUDAExecutionProvider", CPU))


def test_the_server_refuses_to_start_on_a_provider_it_cannot_load(model_home: Path) -> None:
    result = subprocess.run(
        [str(BENTOML), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=bentoml_env(model_home, DLOPS_PROVIDERS="cuda"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dlops: the model binary_classifier_3:"), last
    assert "DLOPS_PROVIDERS asks for CUDAExecutionProvider" in last, last
    assert last.endswith("the server stopped"), last


def test_the_provider_in_use_shows_in_models_v2_and_metrics(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        listed = client.get("/models").json()["models"][0]
        assert listed["execution_providers"] == [CPU]
        name = listed["name"]
        metadata = client.get(f"/v2/models/{name}").json()
        assert metadata["parameters"] == {"execution_providers": [CPU]}
        samples = {
            (sample.labels["model"], sample.labels["provider"]): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "dlops_model_execution_provider"
        }
    assert samples == {(name, CPU): 1.0}
