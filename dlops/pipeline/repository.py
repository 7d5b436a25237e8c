"""The models one worker serves, by name: loaded, reloaded and unloaded while it serves.

Each name answers through its current version's request core (dlops/pipeline/core.py). A load builds
the new version beside the old one (its session opened, warmed up and its memory measured) and only
then makes it current: requests that already hold the old core finish on it, and the old version is
freed when the last of them ends. A load that fails changes nothing. Where models come from is the
``Store``'s business (the BentoML model store, in dlops/model/store.py): no serving framework and no
HTTP here, but the errors carry the status a protocol answers them with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Protocol

from dlops import config
from dlops.metrics import PredictionMetrics
from dlops.model.spec import ModelSpec, StoredModel
from dlops.pipeline.core import Core, CoreLimits
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import BackgroundLoader, Classifier, ModelNotReady
from dlops.pipeline.memory import MIB
from dlops.pipeline.worker import Worker

logger = logging.getLogger(config.LOGGER_NAME)
# The longest a load may take (opening, warming up and measuring a model) before it is given up.
LOAD_TIMEOUT_SECONDS = 600


class State(StrEnum):
    """A model's state as the repository extension names it."""

    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


class Store(Protocol):
    def find(self, name: str, version: str | None) -> StoredModel:
        """The version (None: the latest) of the model ``name``; ClientError if it cannot be
        served (404 when the store has no such model)."""

    def names(self) -> list[str]:
        """Every model's name in the store."""


@dataclass
class Version:
    """One loaded (or loading) version of a model: its request path and its loader."""

    stored: StoredModel
    core: Core
    loader: BackgroundLoader

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def version(self) -> str:
        return self.stored.version

    @property
    def spec(self) -> ModelSpec:
        return self.stored.spec


@dataclass
class Slot:
    """What answers for one name: its current version, and the version being loaded."""

    name: str
    current: Version | None = None
    loading: StoredModel | None = None
    reason: str = ""  # why no version is current (unloaded, or failed to load)


ClassifierFactory = Callable[[StoredModel], Classifier]


class Repository:
    """Name -> the current version's core, for every model this worker serves."""

    def __init__(
        self,
        store: Store,
        worker: Worker,
        limits: CoreLimits,
        metrics_of: Callable[[str], PredictionMetrics],
        open_classifier: ClassifierFactory,
    ) -> None:
        self.store = store
        self.worker = worker
        self.limits = limits
        self._metrics_of = metrics_of
        self._open_classifier = open_classifier
        self._slots: dict[str, Slot] = {}
        self.default_name = ""
        self._changing = threading.RLock()  # one load or unload at a time
        self._accounting = threading.Lock()

    # -- start -----------------------------------------------------------------------------

    def start(self, models: Iterable[tuple[str, str | None]], default: str | None = None) -> None:
        """Begin loading each model (in the background: requests that arrive first wait for
        it); ``default`` (the first, unless named) answers /predict. A model missing from the
        store or damaged raises ClientError here."""
        previous: BackgroundLoader | None = None
        for name, version in models:
            stored = self.store.find(name, version)
            started = self._begin(stored, replaced=None, after=previous)
            self._slots[name] = Slot(name, current=started)
            self.default_name = default or self.default_name or name
            previous = started.loader

    def start_failure(self) -> str | None:
        """Why a model listed at start failed to load, once one has; None while all load or
        have loaded."""
        for slot in self._all_slots():
            current = slot.current
            if current is not None and current.loader.failure is not None:
                return f"the model {current.name}:{current.version} failed to load: " + (
                    current.loader.failure
                )
        return None

    def _begin(
        self,
        stored: StoredModel,
        replaced: Version | None,
        after: BackgroundLoader | None = None,
    ) -> Version:
        """Start loading ``stored`` on a thread (once ``after`` has loaded); it may take what
        ``replaced`` holds."""

        def admit(loader: BackgroundLoader) -> str | None:
            resident, per_image = loader.resident_bytes, loader.activation_bytes_per_image
            with self._accounting:
                others = self._held(excluding=replaced)
                refusal = self.worker.room_for(others + resident, resident, per_image)
                if refusal is not None:
                    return refusal
                # Counted before any request reaches it (account() redoes the sum once it is
                # current and what it replaced is let go).
                self.worker.set_models_bytes(self.worker.models_bytes + resident)
            self._metrics_of(stored.name).runs_on(loader.providers)
            return None

        def loaded() -> Classifier:
            return self._open_classifier(stored)

        loader = BackgroundLoader(loaded, admit, after, least_bytes=stored.size_bytes)
        core = Core(stored.spec, loader, self._metrics_of(stored.name), self.limits, self.worker)
        return Version(stored, core, loader)

    def _all_slots(self) -> list[Slot]:
        """The slots as they are now: loads add slots on other threads (a copy of a dict is
        taken at once, where iterating it would fail if it grew meanwhile)."""
        return list(self._slots.values())

    def _held(self, excluding: Version | None = None) -> int:
        """What the loaded current versions hold, but ``excluding``."""
        return sum(
            slot.current.loader.resident_bytes
            for slot in self._all_slots()
            if slot.current is not None
            and slot.current is not excluding
            and slot.current.loader.is_ready
        )

    def account(self) -> None:
        """The worker's budget after what the current versions hold (after every change)."""
        with self._accounting:
            self.worker.set_models_bytes(self._held())

    # -- serving ---------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The names this worker answers for (loaded or loading), in the order they came."""
        return [slot.name for slot in self._all_slots() if slot.current is not None]

    def current(self, name: str | None = None, version: str | None = None) -> Version:
        """The version answering for ``name`` (None: the default model); a ClientError 404
        that names the models served when there is none, or not that version."""
        name = self.default_name if name is None else name
        slot = self._slots.get(name)
        if slot is None or slot.current is None:
            raise ClientError(self._not_served(name, slot), HTTPStatus.NOT_FOUND)
        if version is not None and version != slot.current.version:
            raise ClientError(
                f"model {name!r} has no version {version!r} loaded; this server serves version "
                f"{slot.current.version!r} (or leave the version out of the path)",
                HTTPStatus.NOT_FOUND,
            )
        return slot.current

    def core(self, name: str | None = None) -> Core:
        return self.current(name).core

    def _not_served(self, name: str, slot: Slot | None) -> str:
        served = ", ".join(repr(each) for each in self.names) or "no model"
        if slot is not None:
            return (
                f"the model {name!r} is not loaded ({slot.reason}); load it with POST "
                f"/v2/repository/models/{name}/load. This server serves {served} (GET /models)"
            )
        return f"there is no model {name!r}; this server serves {served} (GET /models lists them)"

    @property
    def is_ready(self) -> bool:
        """Every model this worker answers for has loaded (none deliberately unloaded counts)."""
        return all(slot.current.loader.is_ready for slot in self._all_slots() if slot.current)

    # -- the repository extension ----------------------------------------------------------

    def load(self, name: str, version: str | None = None) -> Version:
        """Load (or reload) ``name`` from the store and make it current once it is warm.

        Blocks until then (call it off the event loop). A failure (no such model, a bad graph,
        not enough memory) leaves the version that served before serving, and is a ClientError
        saying why.
        """
        with self._changing:
            stored = self.store.find(name, version)
            slot = self._slots.setdefault(name, Slot(name, reason="loading"))
            old = slot.current
            slot.loading = stored
            new = self._begin(stored, replaced=old)
            try:
                new.loader.get(LOAD_TIMEOUT_SECONDS)
            except ModelNotReady as error:
                failure = new.loader.failure or str(error)
                logger.warning("loading %s:%s failed: %s", name, stored.version, failure)
                if old is None:
                    slot.reason = f"failed to load: {failure}"
                raise ClientError(
                    f"the model {name}:{stored.version} did not load, so nothing changed"
                    f"{self._still_serving(old)}: {failure}",
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    kind="load_failed",
                ) from None
            finally:
                slot.loading = None
            slot.current, slot.reason = new, ""
            self.account()
            if old is not None:
                del old  # requests in flight hold it until they end; then it is freed
                self.worker.hand_back()
            logger.info(
                "serving %s:%s (%.0f MiB resident)",
                name,
                stored.version,
                new.loader.resident_bytes / MIB,
            )
            self.default_name = self.default_name or name
            return new

    @staticmethod
    def _still_serving(old: Version | None) -> str:
        return f" (version {old.version} still serves)" if old is not None else ""

    def unload(self, name: str) -> None:
        """Stop serving ``name``: its routes answer 404 until it is loaded again."""
        with self._changing:
            slot = self._slots.get(name)
            if slot is None or slot.current is None:
                raise ClientError(self._not_served(name, slot), HTTPStatus.NOT_FOUND)
            slot.current, slot.reason = None, "unloaded"
            self.account()
            self._metrics_of(name).runs_on(())
            self.worker.hand_back()
            logger.info("unloaded %s", name)

    def served(self) -> list[tuple[str, str]]:
        """(name, version) of every model answering now."""
        return [(name, self.current(name).version) for name in self.names]

    def converge(self, models: list[tuple[str, str]], default: str) -> dict[str, str]:
        """Serve exactly ``models`` (another worker's change), ``default`` answering /predict:
        load what differs, unload what is not listed. What failed to load, by name (the
        version before it serves on)."""
        failures: dict[str, str] = {}
        wanted = dict(models)
        for name in self.names:
            if name not in wanted:
                self.unload(name)
        for name, version in models:
            slot = self._slots.get(name)
            if slot is not None and slot.current is not None and slot.current.version == version:
                continue
            try:
                self.load(name, version)
            except ClientError as error:
                failures[name] = error.message
        self.default_name = default
        return failures

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Every model of the store and every version served or loading, with its state."""
        entries: list[dict[str, str]] = []
        for slot in self._all_slots():
            if slot.current is not None:
                loader = slot.current.loader
                state, reason = State.READY, ""
                if loader.failure is not None:
                    state, reason = State.UNAVAILABLE, f"failed to load: {loader.failure}"
                elif not loader.is_ready:
                    state, reason = State.LOADING, "loading"
                entries.append(_entry(slot.name, slot.current.version, state, reason))
            if slot.loading is not None:
                reason = "loading; the version before it serves until it is ready"
                entries.append(_entry(slot.name, slot.loading.version, State.LOADING, reason))
            elif slot.current is None:
                entries.append(_entry(slot.name, "", State.UNAVAILABLE, slot.reason))
        for name in self.store.names():
            if name not in self._slots:
                entries.append(_entry(name, "", State.UNAVAILABLE, "not loaded"))
        if ready_only:
            entries = [entry for entry in entries if entry["state"] == State.READY]
        return entries

    def listing(self) -> list[dict[str, Any]]:
        """Each model served, for GET /models: name, version, state, classes, input, memory."""
        models = []
        for slot in self._all_slots():
            served, name = slot.current, slot.name
            if served is None:
                continue
            spec, loader = served.spec, served.loader
            post, source = spec.postprocess, spec.input
            state = State.READY if loader.is_ready else State.LOADING
            if loader.failure is not None:
                state = State.UNAVAILABLE
            models.append(
                {
                    "name": name,
                    "version": served.version,
                    "state": state,
                    "default": name == self.default_name,
                    "task": _task(post.is_binary, post.is_multi_label),
                    "classes": len(post.labels),
                    "labels": list(post.labels),
                    "input": {
                        "name": source.name,
                        "dtype": source.dtype,
                        "shape": source.shape(),
                        "kind": "digit" if spec.preprocess.is_digit else "image",
                    },
                    "execution_providers": list(loader.providers),
                    "memory_mib": {
                        "resident": round(loader.resident_bytes / MIB, 1),
                        "per_image_in_a_batch": round(served.core.batch_bytes_per_image() / MIB, 2),
                    },
                    "routes": routes_of(name, served.version, name == self.default_name),
                }
            )
        return models


def routes_of(name: str, version: str, is_default: bool) -> dict[str, str]:
    """Where a model answers."""
    routes = {
        "predict": f"/models/{name}/predict",
        "predict_batch": f"/models/{name}/predict_batch",
        "v2_infer": f"/v2/models/{name}/infer",
        "v2_metadata": f"/v2/models/{name}",
        "v2_version": f"/v2/models/{name}/versions/{version}",
    }
    if is_default:
        routes = {"default_predict": "/predict", "default_predict_batch": "/predict_batch"} | routes
    return routes


def _task(is_binary: bool, is_multi_label: bool) -> str:
    if is_binary:
        return "binary"
    return "multi-label" if is_multi_label else "multi-class"


def _entry(name: str, version: str, state: State, reason: str) -> dict[str, str]:
    return {"name": name, "version": version, "state": str(state), "reason": reason}
