"""The repository in-process: real models, loaded, swapped and unloaded; no HTTP, no BentoML."""

from __future__ import annotations

import asyncio
import gc
import io
import subprocess
import sys
import weakref
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlops.metrics import PredictionMetrics
from dlops.model.resolve import Overrides, resolve_spec
from dlops.model.spec import StoredModel
from dlops.pipeline.core import CoreLimits
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import Classifier
from dlops.pipeline.memory import MIB
from dlops.pipeline.repository import Repository, State
from dlops.pipeline.worker import Worker
from tests.conftest import DIGITS_10_MODEL, FIXTURES, MODEL, ROOT, orientation_model_path
from tests.test_startup import save_slow_model

THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()


class NoMetrics:
    def prepared(self, decode_seconds: float, preprocess_seconds: float) -> None: ...

    def inferred(self, seconds: float, probas: list[float], labels: list[str]) -> None: ...

    def failed(self, kind: str) -> None: ...

    def runs_on(self, providers: tuple[str, ...]) -> None: ...


@dataclass
class FileStore:
    """A store of model files: name -> version -> ONNX file, resolved as import_model.py does."""

    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    overrides: dict[tuple[str, str], Overrides] = field(default_factory=dict)

    def add(self, name: str, version: str, path: Path, overrides: Overrides | None = None) -> None:
        self.files.setdefault(name, {})[version] = path
        self.overrides[(name, version)] = overrides or Overrides()

    def find(self, name: str, version: str | None) -> StoredModel:
        versions = self.files.get(name, {})
        if not versions or (version is not None and version not in versions):
            raise ClientError(f"the model {name}:{version} is not in the store", 404)
        version = version or list(versions)[-1]
        path = versions[version]
        try:
            spec = resolve_spec(path, self.overrides[(name, version)]).spec
        except Exception as error:  # as the BentoML store answers a damaged entry
            raise ClientError(f"{name}:{version} cannot be served: {error}", 422) from None
        return StoredModel(name, version, path, spec, size_bytes=path.stat().st_size)

    def names(self) -> list[str]:
        return sorted(self.files)


def open_classifier(stored: StoredModel) -> Classifier:
    return Classifier(stored.path, stored.spec)


def repository(store: FileStore, max_memory: int = 4096 * MIB) -> Repository:
    worker = Worker(max_memory, body_memory=0, threads=2)
    metrics = {}

    def metrics_of(name: str) -> PredictionMetrics:
        return metrics.setdefault(name, NoMetrics())  # type: ignore[return-value]

    return Repository(store, worker, CoreLimits(), metrics_of, open_classifier)


def started(store: FileStore, *names: str, max_memory: int = 4096 * MIB) -> Repository:
    served = repository(store, max_memory)
    served.start([(name, None) for name in names])
    for name in names:
        served.current(name).loader.get(timeout=60)
    served.account()
    return served


def classify(served: Repository, name: str | None = None) -> dict[str, object]:
    core = served.core(name)
    outcome = asyncio.run(core.classify_files([THREE]))
    return core.answer(outcome.probabilities[0])


@pytest.fixture
def store() -> FileStore:
    files = FileStore()
    files.add("binary", "v1", MODEL)
    files.add("digits", "v1", DIGITS_10_MODEL)
    return files


def test_several_models_answer_by_name_and_the_first_is_the_default(store: FileStore) -> None:
    served = started(store, "binary", "digits")
    assert served.default_name == "binary" and served.names == ["binary", "digits"]
    assert classify(served)["label"] == "3" and "top_k" not in classify(served)
    assert classify(served, "digits")["label"] == "3" and "top_k" in classify(served, "digits")
    assert served.is_ready
    listing = {entry["name"]: entry for entry in served.listing()}
    assert listing["digits"]["classes"] == 10 and listing["digits"]["state"] == State.READY
    assert listing["binary"]["default"] and listing["binary"]["task"] == "binary"
    assert listing["binary"]["routes"]["predict"] == "/models/binary/predict"
    assert served.worker.models_bytes == sum(
        served.current(name).loader.resident_bytes for name in served.names
    )


def test_an_unknown_name_is_a_404_naming_the_models_served(store: FileStore) -> None:
    served = started(store, "binary", "digits")
    with pytest.raises(ClientError) as raised:
        served.core("nope")
    assert raised.value.error_code == HTTPStatus.NOT_FOUND
    assert "'binary', 'digits'" in raised.value.message


def test_a_reload_swaps_in_the_new_version_and_the_old_core_still_answers(
    store: FileStore,
) -> None:
    store.add("binary", "v2", MODEL, Overrides(threshold=0.999))
    served = started(store, "binary")
    old = served.current("binary")
    assert old.version == "v2"  # the latest
    new = served.load("binary", "v1")
    assert served.current("binary") is new and new.version == "v1"
    # A request that took the old core before the swap finishes on it.
    outcome = asyncio.run(old.core.classify_files([THREE]))
    assert old.core.answer(outcome.probabilities[0])["label"] == "no 3"  # threshold 0.999
    assert classify(served)["label"] == "3"


def test_a_load_that_fails_changes_nothing(store: FileStore, tmp_path: Path) -> None:
    not_onnx = tmp_path / "broken.onnx"
    not_onnx.write_bytes(b"not a graph")
    served = started(store, "binary")
    before = served.current("binary")
    store.files["binary"]["broken"] = not_onnx
    store.overrides[("binary", "broken")] = Overrides()
    with pytest.raises(ClientError) as damaged:
        served.load("binary", "broken")
    assert damaged.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY
    with pytest.raises(ClientError) as missing:
        served.load("binary", "v9")
    assert missing.value.error_code == HTTPStatus.NOT_FOUND
    assert served.current("binary") is before and classify(served)["label"] == "3"


def test_a_graph_that_onnxruntime_refuses_leaves_the_old_version(store: FileStore) -> None:
    served = started(store, "binary")
    before = served.current("binary")

    def refusing(stored: StoredModel) -> Classifier:
        raise RuntimeError("onnxruntime: invalid graph")

    served._open_classifier = refusing
    with pytest.raises(ClientError) as raised:
        served.load("binary", "v1")
    assert raised.value.error_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "invalid graph" in raised.value.message and "v1 still serves" in raised.value.message
    assert served.current("binary") is before
    entries = served.index()
    assert [(entry["name"], entry["state"]) for entry in entries] == [
        ("binary", "READY"),
        ("digits", "UNAVAILABLE"),  # in the store, not loaded
    ]


def test_a_model_past_the_memory_budget_is_refused_with_the_figures(store: FileStore) -> None:
    served = started(store, "binary")
    worker = served.worker
    # Exactly room for what is loaded and the minimum left for requests, nothing more.
    worker.max_memory = worker.baseline + worker.models_bytes + 64 * MIB
    store.add("orientation", "v1", orientation_model_path())
    with pytest.raises(ClientError) as raised:
        served.load("orientation")
    message = raised.value.message
    assert "not enough memory" in message and "DLOPS_MAX_WORKER_MEMORY" in message
    assert "MiB" in message and "orientation" not in served.names
    assert classify(served)["label"] == "3"


def test_unload_then_load_again(store: FileStore) -> None:
    served = started(store, "binary", "digits")
    served.unload("digits")
    with pytest.raises(ClientError) as raised:
        served.core("digits")
    assert raised.value.error_code == HTTPStatus.NOT_FOUND
    assert "not loaded (unloaded)" in raised.value.message
    assert {"name": "digits", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in (
        served.index()
    )
    assert served.index(ready_only=True) == [
        {"name": "binary", "version": "v1", "state": "READY", "reason": ""}
    ]
    served.load("digits")
    assert classify(served, "digits")["label"] == "3"


def test_a_model_loaded_before_the_freeze_is_freed_when_unloaded(store: FileStore) -> None:
    """A worker freezes what it holds once its models load (dlops/serving/models.py), and the
    collector never frees a frozen object: an unloaded start-up model must not depend on it."""
    served = started(store, "binary", "digits")
    classifier = weakref.ref(served.current("digits").loader.loaded())
    gc.collect()
    gc.freeze()
    try:
        # What serving makes after the freeze (the core's batching of a turn) must not tie the
        # frozen model to itself either.
        core = served.core("digits")
        asyncio.run(core.classify_files([THREE]))
        assert core._turn_batch is not None
        del core
        served.unload("digits")
        gc.collect()
        assert classifier() is None
    finally:
        gc.unfreeze()


def test_converge_serves_exactly_what_was_published(store: FileStore) -> None:
    store.add("binary", "v2", MODEL, Overrides(threshold=0.999))
    served = started(store, "binary", "digits")
    failures = served.converge([("digits", "v1"), ("binary", "v1")], default="digits")
    assert failures == {}
    assert served.served() == [("binary", "v1"), ("digits", "v1")]
    assert served.default_name == "digits"
    assert served.converge([("binary", "v1")], default="digits") == {}
    assert served.names == ["binary"]
    with pytest.raises(ClientError, match="'digits' is not loaded"):
        served.core()  # the default stays what was published, unloaded as in every worker


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# What a warm-up measures per image: argv = the model, the model whose spec it is served with,
# 1 or 0 (the peak can be read or not), and the batch run before the warm-up (0: none).
MEASURE = """
import sys
from pathlib import Path
from dlops.model.resolve import Overrides, resolve_spec
from dlops.pipeline import inference

model, spec_of, peak_known, earlier = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
if not peak_known:  # as where /proc/self/clear_refs cannot be written
    inference.reset_peak_resident = lambda: False
classifier = inference.Classifier(model, resolve_spec(Path(spec_of), Overrides()).spec)
if int(earlier):
    classifier.run(classifier.example(1))  # the first call keeps what it allocates where it fell
    classifier.run(classifier.example(int(earlier)))
print(classifier.warm_up().activation_bytes_per_image)
"""


def measured_per_image(
    model: Path, spec_of: Path, peak_known: bool = True, earlier_batch: int = 0
) -> int:
    """In a process of its own: in the suite's, what other tests left behind (threads, the
    allocator's history) moved the memory the warm-up reads, by megabytes."""
    argv = [str(model), str(spec_of), "1" if peak_known else "0", str(earlier_batch)]
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(result.stdout)


@pytest.mark.parametrize("peak_known", [True, False], ids=["peak read", "no clear_refs"])
def test_what_an_image_adds_while_it_runs_is_measured_whatever_the_arena_held(
    peak_known: bool,
) -> None:
    """A session whose arena already has room for a larger batch measures what a new one does:
    the room an earlier batch left is handed back before the measure, not reused unseen (how
    much of it a batch of two would reuse depends on how the arena's regions fell)."""
    path = orientation_model_path()
    fresh = measured_per_image(path, path, peak_known)
    after_a_batch = measured_per_image(path, path, peak_known, earlier_batch=4)
    # Room reused unseen would show as less (nothing at all on this machine, before the fix);
    # what the regions of the arena hold varies by machine, so no more than that is asked.
    assert fresh > 0 and after_a_batch >= 0.75 * fresh


@pytest.mark.parametrize("peak_known", [True, False], ids=["peak read", "no clear_refs"])
def test_what_every_call_needs_whatever_its_batch_is_counted_once_where_the_peak_is_read(
    peak_known: bool, tmp_path: Path
) -> None:
    """A graph whose large intermediates do not grow with the batch (1500 x 1500 floats, 9 MiB
    each), and nothing per image. With the peak, nothing is counted per image; without it, half
    of a batch of two's growth is (more than needed: never less)."""
    path = tmp_path / "fixed.onnx"
    save_slow_model(path, side=1500, products=1)
    # Served with the digit model's spec: the same input and output.
    per_image = measured_per_image(path, MODEL, peak_known)
    assert per_image < MIB if peak_known else per_image > 4 * MIB


def test_a_batch_whose_activations_do_not_fit_runs_in_parts_with_the_same_answers() -> None:
    store = FileStore()
    store.add("orientation", "v1", orientation_model_path())
    served = started(store, "orientation")
    version = served.current("orientation")
    # What the warm-up measured varies by machine (the test above checks it); the split is the
    # budget's arithmetic on it, so it is set: 4 MiB an image, about what this CNN needs.
    per_image = version.loader.activation_bytes_per_image = 4 * MIB
    photos = [photo(seed) for seed in range(6)]
    whole = asyncio.run(version.core.classify_files(photos)).probabilities

    sizes: list[int] = []
    classifier = version.loader.loaded()
    run = classifier.run

    def recording(batch: np.ndarray, hand_back: bool = False) -> np.ndarray:
        sizes.append(len(batch))
        return run(batch, hand_back)

    classifier.run = recording  # type: ignore[method-assign]
    served.worker.budget.resize(2 * per_image + per_image // 2)  # room for two at a time
    parts = asyncio.run(version.core.classify_files(photos)).probabilities
    assert sizes == [2, 2, 2]
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
