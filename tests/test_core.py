"""The request core in-process: real models, real decoding, no HTTP."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from dlops.core import Core
from dlops.errors import ClientError
from dlops.inference import BackgroundLoader, Classifier, ModelNotReady
from dlops.resolve import Overrides, resolve_spec
from dlops.spec import ModelSpec
from tests.conftest import DIGITS_10_MODEL, FIXTURES, MODEL

THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()
ZERO = (FIXTURES / "digits" / "test0000_digit0.png").read_bytes()


class RecordingMetrics:
    """Stands in for the Prometheus metrics: records what the core reports."""

    def __init__(self) -> None:
        self.prepared_count = 0
        self.inferred_labels: list[str] = []
        self.failures: list[str] = []

    def prepared(self, decode_seconds: float, preprocess_seconds: float) -> None:
        self.prepared_count += 1

    def inferred(self, seconds: float, probas: list[float], labels: list[str]) -> None:
        self.inferred_labels += labels

    def failed(self, kind: str) -> None:
        self.failures.append(kind)


def make_core(path: Path, spec: ModelSpec | None = None) -> tuple[Core, RecordingMetrics]:
    spec = spec or resolve_spec(path, Overrides()).spec
    loader = BackgroundLoader(lambda: Classifier(path, spec))
    loader.get(timeout=30)
    metrics = RecordingMetrics()
    core = Core(spec, loader, metrics, max_pixels=40_000_000, model_wait_seconds=5)  # type: ignore[arg-type]
    return core, metrics


def test_binary_files_in_answers_out() -> None:
    core, metrics = make_core(MODEL)
    outcome = asyncio.run(core.classify_files([THREE, b"nope", ZERO]))
    answers = core.answers(outcome)
    assert answers[0]["label"] == "3" and answers[2]["label"] == "no 3"
    assert answers[1] == {"error": outcome.errors[1].message, "status": 400}
    assert metrics.prepared_count == 2 and metrics.failures == ["not_an_image"]
    assert metrics.inferred_labels == ["3", "no 3"]


def test_stop_at_first_error_classifies_nothing() -> None:
    core, metrics = make_core(MODEL)
    outcome = asyncio.run(core.classify_files([THREE, b"nope", ZERO], stop_at_first_error=True))
    assert list(outcome.errors) == [1]
    assert outcome.succeeded == [] and metrics.inferred_labels == []


def test_a_tensor_is_fed_as_it_is() -> None:
    core, _ = make_core(DIGITS_10_MODEL)
    batch = np.stack([core.prepare(THREE), core.prepare(ZERO)])
    probabilities = asyncio.run(core.classify_tensor(batch))
    assert probabilities.shape == (2, 10)
    assert [core.answer(row)["label"] for row in probabilities] == ["3", "0"]


def test_a_fast_model_runs_on_the_event_loop_a_slow_one_does_not() -> None:
    fast, _ = make_core(MODEL)
    slow, _ = make_core(MODEL)
    slow.loader.seconds_per_image = 0.01  # as a 224x224 CNN measures at warm-up
    threads: list[str] = []

    def work() -> None:
        threads.append(threading.current_thread().name)

    async def run_both() -> None:
        await fast._run(work, upload_bytes=300)
        await slow._run(work, upload_bytes=300)
        await fast._run(work, upload_bytes=300 * 1024)  # a large upload: a thread, whatever

    asyncio.run(run_both())
    main = threading.main_thread().name
    assert threads[0] == main and threads[1] != main and threads[2] != main


def test_a_slow_warm_up_does_not_decide_for_good() -> None:
    """A digit model that measured slow at start-up (a busy machine) returns to the loop."""
    core, _ = make_core(MODEL)
    core.loader.seconds_per_image = 0.01
    threads: list[str] = []

    async def classify_many() -> None:
        for _ in range(100):
            await core.classify_files([THREE])  # each call updates the model's measured cost
            await core._run(lambda: threads.append(threading.current_thread().name), 300)

    asyncio.run(classify_many())
    main = threading.main_thread().name
    assert threads[0] != main and threads[-1] == main


def test_metric_labels_are_bounded_for_many_classes() -> None:
    core, _ = make_core(DIGITS_10_MODEL)
    post = core.spec.postprocess
    many = ModelSpec(
        core.spec.input,
        core.spec.preprocess,
        type(post)(post.output, 1000, "softmax", tuple(map(str, range(1000))), None, 5),
    )
    wide = Core(many, core.loader, RecordingMetrics(), 40_000_000, 5)  # type: ignore[arg-type]
    rows = np.zeros((2, 1000))
    rows[0, 437] = rows[1, 999] = 1.0
    assert wide.metric_answers(rows) == ([1.0, 1.0], ["classes 400-499", "classes 900-999"])
    assert core.metric_answers(np.eye(10)[[7]]) == ([1.0], ["7"])


def test_a_model_that_fails_to_load_is_a_clear_503_reason() -> None:
    def broken() -> Classifier:
        raise OSError("disk on fire")

    loader = BackgroundLoader(broken)
    with pytest.raises(ModelNotReady, match="disk on fire"):
        asyncio.run(loader.wait(5))


def test_bad_image_errors_are_client_errors() -> None:
    core, _ = make_core(MODEL)
    with pytest.raises(ClientError) as raised:
        core.prepare(b"")
    assert raised.value.error_code == 400 and "empty" in raised.value.message
