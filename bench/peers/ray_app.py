"""The Ray Serve peer: the model at PEER_ENTRY served the way Ray Serve's documentation shows.

Run (by bench/peers/run.py, from the repository root, so that ``bench`` and ``dlops`` import
from the checkout; Ray's workers start in that directory too)::

    PEER_ENTRY=... PEER_PORT=... PEER_WORKERS=1 PEER_MAX_BATCH=1 \\
        .venv-peers/ray/bin/python -m bench.peers.ray_app

``POST /predict`` takes a multipart upload in field ``file`` and answers the JSON dict
``model.answers([data])[0]``; ``GET /health`` answers 200 once the application is RUNNING (every
replica has loaded its model), 503 before. Settings: bench/peers/work.py.

The idiom (Ray Serve 2.60): a ``@serve.deployment`` class wrapped by ``@serve.ingress`` of a
FastAPI app ("FastAPI HTTP Deployments", https://docs.ray.io/en/latest/serve/http-guide.html),
the model loaded in ``__init__``, once per replica, the upload taken the way FastAPI documents
a file (https://fastapi.tiangolo.com/tutorial/request-files/). Ray starts in this process
(``ray.init``), then Serve (``serve.start``, ``serve.run``).

Settings, and why (the guides are under https://docs.ray.io/en/latest/serve/):

    num_replicas=PEER_WORKERS   replicas, each an actor process with a model of its own; Serve
                                reserves one CPU for each (resource-allocation.html)
    model call offloaded        "CPU-bound (model inference): def or async def with offload"
                                (advanced-guides/asyncio-best-practices.html): each replica runs
                                its model on one thread of its own (run_in_executor), one call at
                                a time, so a replica uses one core and its event loop reads the
                                next requests meanwhile
    max_ongoing_requests=100    the value that guide gives for async handlers, and Serve's
                                default before 2.32; with Serve's default, 5, the proxy's router
                                backs off and retries whenever 5 are in flight (about 60
                                requests/s against 200-260 here, digit model, one replica, 16
                                clients); with batching at least twice max_batch_size, as the
                                guide's batched example (64 for 32)
    @serve.batch                with PEER_MAX_BATCH > 1: max_batch_size=PEER_MAX_BATCH and
                                batch_wait_timeout_s=0.01, the decorator's default
                                (advanced-guides/dyn-req-batch.html); one model call per batch
    enable_access_log=False     no log line per request in the proxy and the replicas
                                (LoggingConfig, monitoring.html)
    ray.init(num_cpus=PEER_WORKERS)
                                the CPUs the replicas reserve, no more
    include_dashboard=False     no dashboard (ray.init's docstring; Ray 2.60 still starts the
                                dashboard process, with its usage statistics module only)
    log_to_driver=False         the workers' output is not forwarded to this process
    process_group_cleanup_enabled=False
                                Ray's workers (the Serve controller, the proxy, the replicas)
                                stay in this process group instead of one group each
                                (https://docs.ray.io/en/latest/ray-core/user-spawn-processes.html):
                                a signal to the group reaches every Ray process
    RAY_USAGE_STATS_ENABLED=0   no usage reporting (https://docs.ray.io/en/latest/cluster/
                                usage-stats.html)

Left at Serve's defaults: RAY_SERVE_THROUGHPUT_OPTIMIZED and the flags it sets
(advanced-guides/performance.html): they made no difference here, within the noise of short runs,
and the asyncio guide advises keeping the separate-loop defaults.

Every Ray process (GCS, raylet, the dashboard, monitors and agents, the workers the raylet
starts) descends from this one and is in its process group. On SIGTERM or SIGINT to this process
alone it shuts Serve down, then Ray, which stops them (about 6 s). A SIGTERM to the group reaches
every Ray process too: each stops itself, and this process finds Serve and Ray gone and exits
(2 to 13 s: Ray's driver waits on the dead GCS for a while).
"""

# No ``from __future__ import annotations``: the routes' annotations must stay types, for the
# FastAPI view Serve builds from the class on each replica.
import asyncio
import contextlib
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Annotated, Any

import ray
from fastapi import FastAPI, File, Response, UploadFile
from ray import serve
from ray.serve.schema import ApplicationStatus, LoggingConfig

from bench.floors import SpecModel
from bench.peers import work

APP_NAME = "classifier"
BATCH_WAIT_S = 0.01  # serve.batch's default batch_wait_timeout_s
MAX_ONGOING_REQUESTS = 100  # asyncio-best-practices.html's async example
QUIET = LoggingConfig(enable_access_log=False)
# serve.shutdown waits up to 30 s for the controller; it takes about 3 s here, and the harness
# kills the process group 15 s after its SIGTERM
SERVE_SHUTDOWN_S = 5

app = FastAPI()


@serve.deployment
@serve.ingress(app)
class ImageClassifier:
    """One upload in, dlops' answer out; with batching, one model call per batch."""

    model: SpecModel

    def __init__(self) -> None:
        self.model = work.load_model()
        # one model call at a time, off the event loop, which reads the next requests meanwhile
        self.worker = ThreadPoolExecutor(max_workers=1)

    @app.get("/health")
    def health(self) -> Response:
        # a def route: serve.status() waits on the controller, so FastAPI runs it in a thread
        running = serve.status().applications[APP_NAME].status == ApplicationStatus.RUNNING
        return Response(status_code=200 if running else 503)

    @app.post("/predict")
    async def predict(self, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = await file.read()
        if work.max_batch() > 1:
            return await self.answer_batch(data)
        return (await self.answers([data]))[0]

    @serve.batch(max_batch_size=work.max_batch(), batch_wait_timeout_s=BATCH_WAIT_S)
    async def answer_batch(self, images: list[bytes]) -> list[dict[str, Any]]:
        return await self.answers(images)

    async def answers(self, images: list[bytes]) -> list[dict[str, Any]]:
        """One model call, on the replica's model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, self.model.answers, images)


def main() -> None:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read by ray.init
    ray.init(
        num_cpus=work.workers(),
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"process_group_cleanup_enabled": False},
    )
    # after ray.init, whose own SIGTERM handler first waits up to 30 s for the node to drain
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    serve.start(http_options={"host": work.HOST, "port": work.port()}, logging_config=QUIET)
    classifier = ImageClassifier.options(
        num_replicas=work.workers(),
        max_ongoing_requests=max(MAX_ONGOING_REQUESTS, 2 * work.max_batch()),
    )
    serve.run(classifier.bind(), name=APP_NAME, route_prefix="/", logging_config=QUIET)
    stop.wait()
    asyncio.run(shutdown_serve())
    ray.shutdown()


async def shutdown_serve() -> None:
    """Serve's applications and actors, stopped gracefully within SERVE_SHUTDOWN_S."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(serve.shutdown_async(), SERVE_SHUTDOWN_S)


if __name__ == "__main__":
    main()
