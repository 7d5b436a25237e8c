"""bench/gpu.py's pure parts, in-process: the figures of a run of calls, each provider's
refusal or figures, the report."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from bench.gpu import call_figures, measure_provider, report
from dlops.model.resolve import Overrides, resolve_spec
from tests.conftest import MODEL


def test_figures_of_a_run_of_calls() -> None:
    figures = call_figures([0.001] * 99 + [0.1], images=8)
    assert figures["calls"] == 100
    assert figures["images_per_s"] == pytest.approx(8 * 100 / 0.199)
    assert figures["p50_ms"] == pytest.approx(1.0)
    assert figures["p99_ms"] == pytest.approx(100.0)


def test_a_provider_is_measured_refused_or_found_to_answer_otherwise() -> None:
    spec = resolve_spec(MODEL, Overrides()).spec
    example = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)
    cpu = measure_provider("cpu", MODEL, spec, example, None, (1, 4), seconds=0.01)
    assert cpu["in_use"] == ["CPUExecutionProvider"]
    assert set(cpu["batches"]) == {"1", "4"} and cpu["batches"]["4"]["images_per_s"] > 0
    reference = np.array(cpu["answer"])
    again = measure_provider("cpu", MODEL, spec, example, reference, (1,), seconds=0.01)
    assert "failure" not in again
    otherwise = measure_provider("cpu", MODEL, spec, example, reference + 1, (1,), 0.01)
    assert otherwise["failure"].startswith("answers 1.00e+00 away from the CPU's")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # as here
        cuda = measure_provider("cuda", MODEL, spec, example, reference, (1,), seconds=0.01)
        assert cuda["failure"].startswith("did not load: ProviderUnavailable")


def test_the_report_sets_each_provider_against_the_cpu_and_its_batch_one() -> None:
    def row(rate: float) -> dict[str, float]:
        return {"calls": 10, "images_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0}

    data = {
        "command": "python -m bench.gpu",
        "wall_seconds": 1.0,
        "machine": {
            "date": "2026-12-07",
            "cpu_model": "x",
            "cpus_usable": 16,
            "memory_gib": 128,
            "python": "3.11",
            "packages": {},
            "hey": "",
            "git_commit": "abc",
            "git_dirty": False,
            "load_average_1m_at_start": 0.0,
            "load_average_1m_at_end": 0.0,
        },
        "onnxruntime": "1.32.0",
        "device": "GPU",
        "entry": "orientation",
        "seconds": 3.0,
        "batches": [1, 8],
        "providers": {
            "cpu": {"in_use": ["CPUExecutionProvider"], "batches": {"1": row(100), "8": row(110)}},
            "cuda": {
                "in_use": ["CUDAExecutionProvider"],
                "batches": {"1": row(400), "8": row(1600)},
            },
            "tensorrt": {"failure": "did not load: no libnvinfer"},
        },
    }
    lines = report(data)
    assert "| cuda | 8 | 1,600.0 | 1.00 | 2.00 | 14.55× | 4.00× |" in lines
    assert "| cpu | 8 | 110.0 | 1.00 | 2.00 | 1.00× | 1.10× |" in lines
    assert "- tensorrt: did not load: no libnvinfer" in lines
