"""Loading an ONNX classifier with onnxruntime and running it on batches: no HTTP, no BentoML.

The model's spec (dlops/model/spec.py) names its input and output; a graph whose batch is fixed at 1
is run one example per call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlops import config
from dlops.model.spec import ModelSpec
from dlops.pipeline.memory import (
    Allocator,
    peak_resident_bytes,
    reset_peak_resident,
    resident_bytes,
)

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort

logger = logging.getLogger(config.LOGGER_NAME)
# How often a request waiting for the model checks whether it has loaded.
READY_POLL_SECONDS = 0.02
# The first call initialises onnxruntime's kernels; the next ones show what a call costs.
WARM_UP_CALLS = 2
WARM_UP_ENOUGH_SECONDS = 0.05

CPU_ONLY = ("CPUExecutionProvider",)


class ProviderUnavailable(RuntimeError):
    """An execution provider asked for does not load: never a silent fallback to another."""


def provider_options(name: str, intra_op_threads: int) -> dict[str, str]:
    """A provider's own options. OpenVINO sizes its thread pool from every core it may use, not
    from intra_op_num_threads: each worker would take all the cores of its neighbours too."""
    if name == "OpenVINOExecutionProvider":
        return {"num_of_threads": str(intra_op_threads)}
    return {}


def open_session(
    model_path: Path | str, intra_op_threads: int = 1, providers: tuple[str, ...] = CPU_ONLY
) -> ort.InferenceSession:
    # Imported here, not at the top: `bentoml serve` imports the service module in its arbiter
    # process too, which never runs the model; onnxruntime would cost it ~35 MiB of memory.
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Workers scale by process; a thread pool per worker fights the other workers for the cores
    # and adds hand-off jitter to a small model (see docs/performance.md).
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    available = ort.get_available_providers()
    absent = [name for name in providers if name not in available]
    if absent:
        raise ProviderUnavailable(
            f"DLOPS_PROVIDERS asks for {', '.join(absent)}, which this onnxruntime "
            f"({ort.__version__}) does not have (it has {', '.join(available)}): install the "
            "build that has it (onnxruntime-gpu, onnxruntime-openvino) or change DLOPS_PROVIDERS"
        )
    chosen = [(name, provider_options(name, intra_op_threads)) for name in providers]
    session = ort.InferenceSession(str(model_path), options, providers=chosen)
    # onnxruntime drops a provider that fails to initialise (no device, a missing library) and
    # carries on with the rest, the CPU in the end: refused here instead.
    failed = [name for name in providers if name not in session.get_providers()]
    if failed:
        raise ProviderUnavailable(
            f"DLOPS_PROVIDERS asks for {', '.join(failed)}, which did not load for this model "
            f"(onnxruntime would have run it on {', '.join(session.get_providers())}; its log "
            "says why): fix the device or its libraries, or change DLOPS_PROVIDERS"
        )
    return session


class Classifier:
    """An onnxruntime session fed and read as the spec says: ``run(batch)`` -> raw [N, K]."""

    def __init__(
        self,
        model_path: Path | str,
        spec: ModelSpec,
        intra_op_threads: int = 1,
        providers: tuple[str, ...] = CPU_ONLY,
    ) -> None:
        self.spec = spec
        self.session = open_session(model_path, intra_op_threads, providers)
        self.providers = tuple(self.session.get_providers())
        self._input = spec.input.name
        self._outputs = [spec.postprocess.output]
        self._classes = spec.postprocess.classes
        # onnxruntime's arena keeps what the largest batch so far needed; these runs give it
        # back to the allocator when they end (the worker then hands it to the system).
        self._handing_back = _arena_shrinking_run()

    def run(self, batch: np.ndarray, hand_back: bool = False) -> np.ndarray:
        """A batch in the input's layout and dtype -> the raw output, float [N, K].

        ``hand_back``: free the activations this batch needed when it ends, instead of keeping
        them in onnxruntime's arena for the next one (after a batch that needed much).
        """
        # Imported here, like onnxruntime: `bentoml serve`'s arbiter imports this module (through
        # the service's routes) but never runs a model, and numpy would cost it ~14 MiB. Once
        # imported, this costs ~60 ns a call.
        import numpy as np

        if self.spec.input.max_batch == 1 and len(batch) > 1:
            return np.concatenate(
                [self.run(batch[index : index + 1]) for index in range(len(batch))]
            )
        options = self._handing_back if hand_back else None
        output = self.session.run(self._outputs, {self._input: batch}, options)[0]
        return np.asarray(output).reshape(len(batch), self._classes)

    def example(self, images: int) -> np.ndarray:
        """``images`` blank examples of the input."""
        import numpy as np

        from dlops.pipeline.preprocess import NUMPY_DTYPES

        shape = [images if dim == -1 else int(dim) for dim in self.spec.input.shape(-1)]
        return np.zeros(shape, dtype=NUMPY_DTYPES[self.spec.input.dtype])

    def warm_up(self) -> Warmth:
        """Run a few times so the first client does not pay for onnxruntime's lazy initialisation,
        measuring what the model costs on the way (the first call, which initialises, is not
        measured).

        Memory: what one more image in a batch costs while the model runs is what this process
        grows by, at its peak, while a batch of two runs, less what it grows by while a batch of
        one does: what every call needs whatever its batch is taken away. Each starts from an
        arena that handed its activations back: room it kept would be reused unseen, by an
        amount that depends on how its regions fell (another machine's kernels, another
        history). The batch of one runs last and keeps its activations: what a call of one
        needs is held from then on, counted with the model. Where the peak cannot be read (no
        ``/proc/self/clear_refs``), half the growth a batch of two leaves is taken, and the
        batch of two's activations are held: what every call needs is then counted with the
        model and per image too, more than is needed, never less. A graph that takes one image
        per call runs a batch image by image: nothing grows.

        A fast model is also asked whether its answers for a batch are each image's alone, bit
        for bit (``batches_alike``): then images that arrive together may share a model call.
        """
        one, two = self.example(1), self.example(2)
        self.run(one, hand_back=True)  # onnxruntime's lazy initialisation
        allocator = Allocator()
        # Memory freed before (a model unloaded, large requests) would be reused unseen and hide
        # the growth: handed back to the system first, the growth is this batch's own.
        allocator.trim()
        before = resident_bytes()
        peak_known = reset_peak_resident()
        started = time.perf_counter()
        self.run(two, hand_back=peak_known)
        fastest = (time.perf_counter() - started) / 2
        if peak_known:
            two_grows = peak_resident_bytes() - before
            allocator.trim()
            before = resident_bytes()
            reset_peak_resident()
            self.run(one)
            per_image = two_grows - (peak_resident_bytes() - before)
        else:
            per_image = (resident_bytes() - before) // 2
        per_image = 0 if self.spec.input.max_batch == 1 else max(0, per_image)
        for _ in range(WARM_UP_CALLS):
            if fastest > WARM_UP_ENOUGH_SECONDS:  # a slow model: no need to time it again
                break
            started = time.perf_counter()
            self.run(one)
            fastest = min(fastest, time.perf_counter() - started)
        alike = fastest <= WARM_UP_ENOUGH_SECONDS and self.batches_alike()
        return Warmth(
            seconds_per_image=fastest, activation_bytes_per_image=per_image, batches_alike=alike
        )

    def batches_alike(self) -> bool:
        """Whether a batch of two varied examples gets, bit for bit, each one's answer alone.

        onnxruntime may run a batch with other kernels, whose rounding differs in the last bits;
        an image's answer must not depend on which others arrived with it.
        """
        import numpy as np

        pair = self.example(2)
        generator = np.random.default_rng(0)
        if np.issubdtype(pair.dtype, np.integer):
            pair[...] = generator.integers(0, 256, pair.shape)
        else:
            pair[...] = generator.random(pair.shape)
        together = self.run(pair)
        alone = np.concatenate([self.run(pair[:1]), self.run(pair[1:])])
        return bool(np.array_equal(together, alone, equal_nan=True))


@dataclass(frozen=True)
class Warmth:
    """What the warm-up measured: one image's time, and its activations' memory in a batch."""

    seconds_per_image: float
    activation_bytes_per_image: int
    # A batch's answers are each image's alone, bit for bit (always False for a slow model).
    batches_alike: bool = False


def _arena_shrinking_run() -> ort.RunOptions:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class ModelNotReady(RuntimeError):
    """The classifier is still loading, or failed to load."""


class BackgroundLoader:
    """Loads and warms the classifier on a thread, so the server answers while it does.

    Health probes get a prompt answer (live, not yet ready) instead of a hanging connection, and
    requests that arrive early wait for the model (without holding the event loop) rather than
    fail.
    """

    def __init__(
        self,
        load: Callable[[], Classifier],
        admit: Callable[[BackgroundLoader], str | None] | None = None,
        after: BackgroundLoader | None = None,
        least_bytes: int = 0,
    ) -> None:
        """``admit(loader)``, once the model is loaded and measured (its memory and providers
        below): why it may not be served (the load then fails with that reason), or None.
        ``after``: a loader to let finish first, so that each model's memory is its own.
        ``least_bytes``: what the model holds at least (its weights), should the growth of the
        process undercount it (a load that reuses memory freed before)."""
        self._load = load
        self._admit = admit
        self._after = after
        self._least_bytes = least_bytes
        self._done = threading.Event()
        self._classifier: Classifier | None = None
        self._failure: str | None = None
        self.seconds_per_image = float("inf")  # measured by the warm-up, once loaded
        self.resident_bytes = 0  # what the loaded model holds, measured as it loads
        self.activation_bytes_per_image = 0  # what each image of a batch adds while it runs
        self.batches_alike = False  # a batch's answers are each image's alone (see warm_up)
        self.providers: tuple[str, ...] = ()  # the execution providers it runs on, once loaded
        threading.Thread(target=self._run, name="model-loader", daemon=True).start()

    def _run(self) -> None:
        if self._after is not None:
            self._after._done.wait()
        before = resident_bytes()
        try:
            classifier = self._load()
            warmth = classifier.warm_up()
            self.seconds_per_image = warmth.seconds_per_image
            self.activation_bytes_per_image = warmth.activation_bytes_per_image
            self.batches_alike = warmth.batches_alike
            self.resident_bytes = max(self._least_bytes, resident_bytes() - before)
            self.providers = classifier.providers
            refusal = self._admit(self) if self._admit is not None else None
            if refusal is not None:
                raise MemoryError(f"not enough memory for this model: {refusal}")
            self._classifier = classifier
        except Exception as error:  # reported to every caller instead of dying unseen
            self._failure = f"{type(error).__name__}: {error}"
            logger.error("the model failed to load: %s", self._failure)
        finally:
            self._done.set()

    @property
    def failure(self) -> str | None:
        """Why the model failed to load, once it has."""
        return self._failure

    @property
    def is_ready(self) -> bool:
        return self._classifier is not None

    def _outcome(self, timeout: float) -> Classifier:
        if self._classifier is not None:
            return self._classifier
        if self._failure is not None:
            raise ModelNotReady(f"the model failed to load ({self._failure})")
        raise ModelNotReady(f"the model is still loading after {timeout:.0f} s")

    def loaded(self) -> Classifier:
        """The classifier if it has loaded (ModelNotReady if not), without waiting."""
        return self._outcome(0)

    def get(self, timeout: float) -> Classifier:
        """The classifier, waiting up to ``timeout`` seconds for it on this thread."""
        self._done.wait(timeout)
        return self._outcome(timeout)

    async def wait(self, timeout: float) -> Classifier:
        """The classifier, waiting up to ``timeout`` seconds without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while not self._done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(READY_POLL_SECONDS)
        return self._outcome(timeout)
