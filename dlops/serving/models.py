"""A worker's models: its repository, built from the settings and kept in step with the others.

service.py calls ``serve_models()`` as a worker starts. The repository starts loading the models
(the published ones if the repository extension changed them before this worker started, else
DLOPS_MODELS); a thread then watches them: a start-up model that fails to load stops the whole
server (dlops/serving/server_state.py), and afterwards each change another worker publishes is
applied here. ``InStep.change`` is how a repository call changes the models of every worker.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

from dlops import config
from dlops.metrics import prediction_metrics
from dlops.model.spec import StoredModel
from dlops.model.store import Unservable, stored_model
from dlops.pipeline.core import CoreLimits, worker_for
from dlops.pipeline.decode import DecodeLimits
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import Classifier
from dlops.pipeline.memory import MIB
from dlops.pipeline.repository import Repository
from dlops.serving.server_state import SYNC_SECONDS, SharedModels, stop_server

T = TypeVar("T")
logger = logging.getLogger(config.LOGGER_NAME)


class BentoStore:
    """The BentoML model store as the repository (dlops/pipeline/repository.py) reads it."""

    def find(self, name: str, version: str | None) -> StoredModel:
        try:
            return stored_model(name, version)
        except Unservable as error:
            status = HTTPStatus.NOT_FOUND if error.missing else HTTPStatus.UNPROCESSABLE_ENTITY
            raise ClientError(str(error), status, kind="load_failed") from None

    def names(self) -> list[str]:
        import bentoml

        return sorted({model.tag.name for model in bentoml.models.list()})


def core_limits() -> CoreLimits:
    """The request core's limits (dlops/pipeline/core.py) from the settings."""
    return CoreLimits(
        decode=DecodeLimits(max_pixels=config.MAX_IMAGE_PIXELS),
        max_request_pixels=config.MAX_REQUEST_PIXELS,
        max_worker_memory=config.MAX_WORKER_MEMORY_MIB * MIB,
        body_memory=config.BODY_MEMORY_BYTES,
        work_threads=config.WORK_THREADS,
        model_wait_seconds=config.MODEL_WAIT_SECONDS,
        return_memory=config.RETURN_MEMORY,
        adaptive_batching=config.ADAPTIVE_BATCHING,
    )


def open_classifier(stored: StoredModel) -> Classifier:
    path = stored.path / config.MODEL_FILE_NAME
    return Classifier(path, stored.spec, config.INTRA_OP_THREADS, config.PROVIDERS)


class InStep:
    """This worker's repository, and the generation of published models it has applied."""

    def __init__(self, repository: Repository, shared: SharedModels, applied: int) -> None:
        self.repository = repository
        self.shared = shared
        self.applied = applied
        self._applying = threading.Lock()

    def change(self, action: Callable[[Repository], T]) -> tuple[T, dict[str, str]]:
        """Run ``action`` on this worker's repository, publish the models it leaves, and wait
        for every worker to serve them. Blocks: call it off the event loop. Returns the
        action's result and what failed in other workers ("worker <pid>: <name>": why).
        """
        with self.shared.changing():
            self.catch_up()  # another worker's change first, so that it is not undone
            result = action(self.repository)
            with self._applying:
                repository = self.repository
                self.applied = self.shared.publish(repository.served(), repository.default_name)
                self.shared.report(self.applied, {})
        try:
            failures = self.shared.wait_for_workers(
                config.WORKERS, self.applied, config.CONVERGE_SECONDS
            )
        except TimeoutError as error:
            raise ClientError(
                f"the change is made in this worker, but {error} after "
                f"{config.CONVERGE_SECONDS} s; GET /v2/repository/index shows where each model "
                "stands",
                HTTPStatus.GATEWAY_TIMEOUT,
                kind="repository_timeout",
            ) from None
        return result, failures

    def catch_up(self) -> None:
        """Apply the models last published, if this worker has not yet."""
        with self._applying:
            published = self.shared.desired()
            if published is None or published.generation <= self.applied:
                return
            generation = published.generation
            failures = self.repository.converge(published.models, published.default)
            for name, why in failures.items():
                logger.error("could not follow the change to %s: %s", name, why)
            self.applied = generation
            self.shared.report(generation, failures)

    def watch(self, folder: Path) -> None:
        """Stop the server if a start-up model fails; then apply what other workers publish."""
        while not self.repository.is_ready:
            failure = self.repository.start_failure()
            if failure is not None:
                logger.error("%s; stopping the server", failure)
                stop_server(folder, failure)
                return
            time.sleep(SYNC_SECONDS)
        self.repository.account()
        held = self.repository.worker.models_bytes
        logger.info("models loaded: %s (%.0f MiB)", self.repository.names, held / MIB)
        # What the worker holds to serve lives as long as it: frozen out of the collector, whose
        # full passes would otherwise walk every one of its objects every few thousand requests.
        gc.collect()
        gc.freeze()
        self.shared.report(self.applied, {})
        while True:
            time.sleep(SYNC_SECONDS)
            try:
                self.catch_up()
            except Exception:  # this thread must live on to keep the worker in step
                logger.exception("applying the published models failed; retrying")


def serve_models(folder: Path) -> InStep:
    """This worker's repository, loading its models, with the thread that watches them."""
    import onnxruntime  # noqa: F401  (before the worker's baseline: every model needs it)

    limits = core_limits()
    repository = Repository(
        BentoStore(), worker_for(limits), limits, prediction_metrics, open_classifier
    )
    shared = SharedModels(folder)
    published = shared.desired()
    try:
        if published is None:
            applied = 0
            repository.start(config.MODELS)
        else:
            applied = published.generation
            repository.start(published.models, published.default)
    except ClientError as error:  # removed from the store since the arbiter checked it
        stop_server(folder, error.message)
        raise SystemExit(1) from None
    in_step = InStep(repository, shared, applied)
    threading.Thread(target=in_step.watch, args=(folder,), name="models", daemon=True).start()
    return in_step
