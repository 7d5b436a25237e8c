"""The LitServe peer: the model at PEER_ENTRY served the way LitServe's documentation shows.

Run (by bench/peers/run.py, from the repository root, so that ``bench`` and ``dlops`` import
from the checkout)::

    PEER_ENTRY=... PEER_PORT=... PEER_WORKERS=1 PEER_MAX_BATCH=1 \\
        .venv-peers/litserve/bin/python -m bench.peers.litserve_app

``POST /predict`` takes a multipart upload in field ``file`` and answers the JSON dict
``model.answers([data])[0]``; ``GET /health`` answers 200 once every inference worker has run
``setup`` (loaded the model), 503 before. Settings: bench/peers/work.py.

The idiom (LitServe 0.2.19, read in its installed source, ``litserve/api.py`` and
``litserve/server.py``, whose docstrings are the API reference at
https://lightning.ai/docs/litserve/api-reference/litapi and .../litserver): a ``LitAPI`` with
``setup`` (load once per worker), ``decode_request``, ``predict``; the default ``encode_response``
hands the dict to FastAPI as JSON. A multipart request reaches ``decode_request`` as the parsed
form (``server.py``'s ``_prepare_request`` awaits ``request.form()``), whose ``file`` item is an
``UploadFile``: read as LitServe's own test does (``tests/unit/test_form.py``,
``request["input"].file.read()``).

Settings, and why:

    accelerator="cpu"          the model runs on onnxruntime's CPU provider; LitServer's docstring
    workers_per_device         PEER_WORKERS inference worker processes, each loading the model;
                               the docstring: "For CPU, set to the number of cores"
    max_batch_size             LitAPI's batcher when PEER_MAX_BATCH > 1 (LitAPI docstring,
                               https://lightning.ai/docs/litserve/features/batching): the
                               worker collects up to that many requests, the default ``batch``
                               leaves the decoded uploads a list, ``predict`` makes one model
                               call of it, the default ``unbatch`` splits the answers
    batch_timeout=0.01         the value LitServe's own benchmark against FastAPI uses for an
                               image classifier on CPU (tests/parity_fastapi/ls-server.py);
                               LitAPI's docstring example, 0.1, is a GPU batch's
    fast_queue=True            ZeroMQ for the responses, "for high-throughput scenarios (>100
                               RPS)" (LitServer docstring); the digit model answers well above
                               that, and the parity benchmark sets it too
    timeout=30                 the default: it only fails requests that waited longer than this
                               in the queue, it costs nothing per request, and a shorter one would
                               turn an overload into 504s rather than latency
    track_requests=False       the default: it counts active requests for callbacks, which
                               nothing here reads (a shared counter update per request)
    num_api_servers=None       LitServer.run's default and its recommendation: one uvicorn
                               process per inference worker
    log_level="warning"        no uvicorn access log line per request, as the parity benchmark
                               and run's "Production Configuration" example
    generate_client_file=False run would otherwise write a client.py into the working directory
                               (the checkout)

LitServe's processes are all children of this one, in its process group: a multiprocessing
manager (the request queues) and its resource tracker, PEER_WORKERS spawned inference workers and
as many forked uvicorn API servers. LitServer.run's docstring promises a graceful shutdown on
SIGTERM, but 0.2.19 only stops its children on KeyboardInterrupt: this process turns SIGTERM into
one. A SIGTERM to the whole group stops every process at once.
"""

# No ``from __future__ import annotations``: LitServe compares decode_request's annotation with
# FastAPI's Request, and a string there would hand the worker the Request itself, unpicklable.
import multiprocessing
import signal
from types import FrameType
from typing import Any

import litserve as ls
from fastapi import Request

from bench.floors import SpecModel
from bench.peers import work

BATCH_TIMEOUT_S = 0.01  # tests/parity_fastapi/ls-server.py's, for an image classifier on CPU
FIELD = "file"  # the multipart field ``curl -F file=@page.jpg`` sends


class ImageClassifierAPI(ls.LitAPI):
    """One upload in, dlops' answer out; with batching, one model call per batch."""

    model: SpecModel

    def setup(self, device: str) -> None:
        self.model = work.load_model()

    # LitServe reads this annotation to give its route a Request; what arrives here, in the
    # worker, is the parsed form (``await request.form()``), indexed by field name.
    def decode_request(self, request: Request) -> bytes:
        return request[FIELD].file.read()

    def predict(self, x: bytes | list[bytes]) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(x, list):  # batching: the default ``batch`` leaves the uploads a list
            return self.model.answers(x)
        return self.model.answers([x])[0]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl+C in this process, so that LitServer.run stops its children; the default
    in the children forked with this handler (uvicorn raises it again once it has drained)."""
    if multiprocessing.parent_process() is None:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def main() -> None:
    # with max_batch_size 1 LitServe runs its single loop, which does not read batch_timeout
    api = ImageClassifierAPI(max_batch_size=work.max_batch(), batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=work.workers(),
        fast_queue=True,
        timeout=30,
        track_requests=False,
    )
    # LitServer.run shuts its processes down on KeyboardInterrupt (Ctrl+C) but sets no SIGTERM
    # handler: without one, a SIGTERM to this process alone would orphan its children
    signal.signal(signal.SIGTERM, _sigterm)
    server.run(host=work.HOST, port=work.port(), log_level="warning", generate_client_file=False)


if __name__ == "__main__":  # spawned inference workers import this module: only the parent serves
    main()
