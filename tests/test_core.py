"""The request core in-process: real models, real decoding, no HTTP."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlops.model.resolve import Overrides, resolve_spec
from dlops.model.spec import ModelSpec
from dlops.pipeline.core import INLINE_MAX_BYTES, Core, CoreLimits, Outcome
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import BackgroundLoader, Classifier, ModelNotReady
from dlops.pipeline.memory import MIB
from dlops.pipeline.worker import Worker
from tests.conftest import DIGITS_10_MODEL, FIXTURES, MODEL

THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()
ZERO = (FIXTURES / "digits" / "test0000_digit0.png").read_bytes()


class RecordingMetrics:
    """Stands in for the Prometheus metrics: records what the core reports."""

    def __init__(self) -> None:
        self.prepared_count = 0
        self.inferred_labels: list[str] = []
        self.model_calls: list[int] = []  # the images of each model call
        self.failures: list[str] = []

    def prepared(self, decode_seconds: float, preprocess_seconds: float) -> None:
        self.prepared_count += 1

    def inferred(self, seconds: float, probas: list[float], labels: list[str]) -> None:
        self.inferred_labels += labels
        self.model_calls.append(len(labels))

    def failed(self, kind: str) -> None:
        self.failures.append(kind)


def make_core(
    path: Path, limits: CoreLimits | None = None, spec: ModelSpec | None = None
) -> tuple[Core, RecordingMetrics]:
    spec = spec or resolve_spec(path, Overrides()).spec
    loader = BackgroundLoader(lambda: Classifier(path, spec))
    loader.get(timeout=30)
    metrics = RecordingMetrics()
    core = Core(spec, loader, metrics, limits)  # type: ignore[arg-type]
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


def threads_that_preprocess(core: Core) -> list[str]:
    """The names of the threads that run each image's preprocessing, from now on."""
    names: list[str] = []
    tensor = core.preprocessor.tensor

    def recording(pixels: np.ndarray) -> np.ndarray:
        names.append(threading.current_thread().name)
        return tensor(pixels)

    core.preprocessor.tensor = recording  # type: ignore[method-assign]
    return names


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_small_images_for_a_fast_model_are_answered_on_the_event_loop() -> None:
    fast, _ = make_core(MODEL)
    slow, _ = make_core(MODEL)
    slow.loader.seconds_per_image = 0.01  # as a 224x224 CNN measures at warm-up
    on_fast, on_slow = threads_that_preprocess(fast), threads_that_preprocess(slow)
    # Few bytes, but many pixels declared: a thread, whatever the model.
    large = png(Image.open(io.BytesIO(THREE)).resize((600, 600)))
    assert len(large) < INLINE_MAX_BYTES

    async def classify_all() -> None:
        await fast.classify_files([THREE])
        await slow.classify_files([THREE])
        await fast.classify_files([large])

    asyncio.run(classify_all())
    main = threading.main_thread().name
    assert on_fast[0] == main and on_slow[0] != main and on_fast[1] != main


DIGITS = sorted((FIXTURES / "digits").glob("*.png"))


def arriving_together(core: Core, files: list[bytes]) -> list[list[dict[str, object]]]:
    """Each file's answers, all requests made ready in one turn of the loop, as under load."""

    async def all_at_once() -> list[Outcome]:
        return await asyncio.gather(*(core.classify_files([file]) for file in files))

    return [core.answers(outcome) for outcome in asyncio.run(all_at_once())]


def one_by_one(core: Core, files: list[bytes]) -> list[list[dict[str, object]]]:
    return [core.answers(asyncio.run(core.classify_files([file]))) for file in files]


@pytest.mark.parametrize("path", [MODEL, DIGITS_10_MODEL])
def test_small_images_that_arrive_together_share_a_model_call_with_the_same_answers(
    path: Path,
) -> None:
    files = [digit.read_bytes() for digit in DIGITS]
    core, metrics = make_core(path)
    assert core.loader.batches_alike  # measured at its warm-up
    alone = one_by_one(core, files)
    assert metrics.model_calls == [1] * len(files)
    metrics.model_calls.clear()
    assert arriving_together(core, files) == alone  # bit for bit: the floats compare equal
    assert metrics.model_calls == [1, len(files) - 1]


def test_tensors_of_one_example_that_arrive_together_share_a_model_call() -> None:
    """/v2 clients that send the input tensor itself, one example each, as under load."""
    core, metrics = make_core(DIGITS_10_MODEL)
    examples = [core.prepare(digit.read_bytes())[None] for digit in DIGITS]
    alone = [asyncio.run(core.classify_tensor(example)) for example in examples]
    metrics.model_calls.clear()

    async def all_at_once() -> list[np.ndarray]:
        return await asyncio.gather(*(core.classify_tensor(example) for example in examples))

    together = asyncio.run(all_at_once())
    assert metrics.model_calls == [1, len(examples) - 1]
    for one, shared in zip(alone, together, strict=True):
        assert shared.shape == (1, 10) and np.array_equal(one, shared)
    assert [core.answer(row[0])["label"] for row in together] == [
        digit.stem[-1] for digit in DIGITS
    ]


def test_adaptive_batching_is_off_when_asked_or_when_a_batch_would_change_answers() -> None:
    files = [digit.read_bytes() for digit in DIGITS[:5]]
    turned_off, off_metrics = make_core(MODEL, CoreLimits(adaptive_batching=False))
    unlike, unlike_metrics = make_core(MODEL)
    unlike.loader.batches_alike = False  # as a model whose kernels round a batch otherwise
    for core, metrics in ((turned_off, off_metrics), (unlike, unlike_metrics)):
        arriving_together(core, files)
        assert metrics.model_calls == [1] * len(files)


def test_a_model_whose_answers_depend_on_the_batch_is_found_at_its_warm_up(
    tmp_path: Path,
) -> None:
    """Each image's answer less the batch's mean: what batch statistics left in a graph do."""
    from onnx import TensorProto, helper, save

    nodes = [
        helper.make_node("Cast", ["input"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["pixels", "image_axes"], ["sums"], keepdims=0),
        helper.make_node("ReduceMean", ["sums"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["sums", "mean"], ["centred"]),
        helper.make_node("Unsqueeze", ["centred", "class_axis"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch_dependent",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 28, 28])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        [
            helper.make_tensor("image_axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("class_axis", TensorProto.INT64, [1], [1]),
        ],
    )
    path = tmp_path / "batch_dependent.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    spec = resolve_spec(MODEL, Overrides()).spec  # the same input and output as the digit model
    classifier = Classifier(path, spec)
    assert not classifier.warm_up().batches_alike
    assert Classifier(MODEL, spec).warm_up().batches_alike


def test_a_bad_image_among_those_arriving_together_gets_its_own_error() -> None:
    core, metrics = make_core(MODEL)
    answers = arriving_together(core, [THREE, b"nope", ZERO, THREE])
    assert [answer[0].get("label") for answer in answers] == ["3", None, "no 3", "3"]
    assert answers[1][0]["status"] == 400
    assert metrics.model_calls == [1, 2] and metrics.failures == ["not_an_image"]


def test_a_slow_warm_up_does_not_decide_for_good() -> None:
    """A digit model that measured slow at start-up (a busy machine) returns to the loop."""
    core, _ = make_core(MODEL)
    core.loader.seconds_per_image = 0.01
    threads = threads_that_preprocess(core)

    async def classify_many() -> None:
        for _ in range(100):
            await core.classify_files([THREE])  # each call updates the model's measured cost

    asyncio.run(classify_many())
    main = threading.main_thread().name
    assert threads[0] != main and threads[-1] == main


def test_abandoned_work_stops_at_its_next_image_and_keeps_its_thread_until_then() -> None:
    core, metrics = make_core(MODEL, CoreLimits(work_threads=1))
    core.loader.seconds_per_image = 0.01  # on the one work thread
    started, release = threading.Event(), threading.Event()
    tensor = core.preprocessor.tensor

    def gated(pixels: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(10)
        return tensor(pixels)

    core.preprocessor.tensor = gated  # type: ignore[method-assign]

    async def scenario() -> list[dict[str, object]]:
        abandoned = asyncio.create_task(core.classify_files([THREE] * 5))
        await asyncio.to_thread(started.wait, 10)
        abandoned.cancel()  # as the request deadline does
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        # The abandoned request's first image still holds the only thread: the next waits.
        second = asyncio.create_task(core.classify_files([ZERO]))
        await asyncio.sleep(0.2)
        assert not second.done()
        release.set()
        return core.answers(await second)

    assert asyncio.run(scenario())[0]["label"] == "no 3"
    # One image of the abandoned five (it stopped before the second), then the new request's.
    assert metrics.prepared_count == 2


def test_an_image_that_needs_more_than_the_memory_budget_is_refused() -> None:
    core, metrics = make_core(MODEL, CoreLimits(max_worker_memory=0))  # the minimum budget
    wide = png(Image.new("RGB", (5000, 4000), "white"))  # 80 MB decoded, a few kB encoded
    outcome = asyncio.run(core.classify_files([wide, THREE]))
    error = outcome.errors[0]
    assert error.error_code == 413 and "DLOPS_MAX_WORKER_MEMORY" in error.message
    assert "MiB" in error.message and metrics.failures == ["over_memory_budget"]
    assert core.answers(outcome)[1]["label"] == "3"


def test_a_request_may_declare_only_so_many_pixels() -> None:
    core, _ = make_core(MODEL, CoreLimits(max_request_pixels=2 * 28 * 28))
    outcome = asyncio.run(core.classify_files([THREE, ZERO, THREE]))
    assert sorted(outcome.succeeded) == [0, 1]
    assert outcome.errors[2].error_code == 413
    assert "1,568 pixels" in outcome.errors[2].message


def test_metric_labels_are_bounded_for_many_classes() -> None:
    core, _ = make_core(DIGITS_10_MODEL)
    post = core.spec.postprocess
    many = ModelSpec(
        core.spec.input,
        core.spec.preprocess,
        type(post)(post.output, 1000, "softmax", tuple(map(str, range(1000))), None, 5),
    )
    wide = Core(many, core.loader, RecordingMetrics())  # type: ignore[arg-type]
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


class CountingAllocator:
    """Stands in for glibc's allocator: counts the hand-backs the core asks for."""

    def __init__(self) -> None:
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1


def test_freed_memory_is_handed_back_only_past_the_retained_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream of photos reuses what the last one freed; a worker holding more than the margin
    above what it held at rest gives it back after large work, and small work never trims."""
    from dlops.pipeline import worker as worker_module

    resident = {"bytes": 100 * MIB}
    monkeypatch.setattr(worker_module, "resident_bytes", lambda: resident["bytes"])
    worker = Worker(1024 * MIB, 0, threads=1)  # at rest: 100 MiB
    allocator = CountingAllocator()
    worker._allocator = allocator  # type: ignore[assignment]
    large, small = worker_module.TRIM_AFTER_BYTES, worker_module.TRIM_AFTER_BYTES - 1
    never = threading.Event()
    worker.within_budget(large, never, "image", lambda: None)
    assert allocator.trims == 0
    resident["bytes"] += worker_module.RETAINED_BYTES  # exactly at the margin: kept for reuse
    worker.within_budget(large, never, "image", lambda: None)
    assert allocator.trims == 0
    resident["bytes"] += 1
    worker.within_budget(small, never, "image", lambda: None)
    assert allocator.trims == 0
    worker.within_budget(large, never, "image", lambda: None)
    assert allocator.trims == 1
    # What the trim could not hand back is held for good: the margin counts from there.
    worker.within_budget(large, never, "image", lambda: None)
    assert allocator.trims == 1
    resident["bytes"] += worker_module.RETAINED_BYTES + 1
    worker.within_budget(large, never, "image", lambda: None)
    assert allocator.trims == 2
