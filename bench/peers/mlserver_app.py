"""The MLServer peer: Seldon's MLServer 1.7.1 serving the image model through a custom runtime.

Run from the checkout (so that ``bench`` and ``dlops`` import from it), in its own environment
(requirements/peers/mlserver.txt):

    PEER_ENTRY=.bentoml/models/orientation/<version> PEER_MODEL_NAME=orientation PEER_PORT=8080 \\
        .venv-peers/mlserver/bin/python -m bench.peers.mlserver_app

It does what MLServer's documentation shows for a custom runtime: an ``MLModel`` subclass
(``DlopsRuntime``: ``load`` loads the model with ``work.load_model``, ``predict`` runs
``work.tensors``) named by the ``implementation`` of a ``model-settings.json``, a server-wide
``settings.json`` beside it, and ``mlserver start FOLDER``
(https://docs.seldon.ai/mlserver/user-guide/custom). The two files are written at start into a
temporary folder from the settings below, and ``mlserver start`` runs in this process (the CLI's
own entry point, ``mlserver.cli.main``), so that the folder is removed when the server exits.

MLServer's REST server parses the body as JSON only (mlserver/rest/endpoints.py: the request is a
pydantic ``InferenceRequest``): it has no binary tensor extension (SeldonIO/MLServer#324, open),
so it takes ``work.oip_json_body`` (``image_file`` base64, ``"content_type": "base64"``), with
``Content-Type: application/json``. It answers ``proba`` FP32 [N, K] and ``label`` BYTES [N] as
JSON; ``GET /v2/models/{PEER_MODEL_NAME}/ready`` answers 200 once ``load`` has returned.

Settings: work.py's (PEER_ENTRY, PEER_MODEL_NAME, PEER_PORT, PEER_WORKERS, PEER_MAX_BATCH), and

    PEER_PARALLEL_WORKERS  MLServer's ``parallel_workers`` (default: PEER_WORKERS): that many
                           inference worker processes, each loading the model; 0 runs inference
                           in the server's own process, on its event loop
    PEER_MAX_BATCH_TIME    adaptive batching's ``max_batch_time``, seconds (default 0.01); only
                           read when PEER_MAX_BATCH > 1

What is set, and why:

* ``parallel_workers``: the server-wide setting that sizes the inference pool; N > 0 starts N
  worker processes, 0 disables the pool
  (https://docs.seldon.ai/mlserver/user-guide/parallel-inference). The model is loaded in each
  worker, not in the server's process.
* ``max_batch_size`` and ``max_batch_time`` (model settings): adaptive batching, off by default;
  it is on when both are above 0 (size > 1)
  (https://docs.seldon.ai/mlserver/user-guide/adaptive-batching). The docs give no value for the
  time ("found through experimentation"); MLServer's own benchmark models use 0.2-0.3 s
  (benchmarking/testserver/models/*/model-settings.json), which every partial batch would wait
  out. 10 ms is under one orientation image's work here (about 25 ms), so the wait costs less
  than the model call it can share.
* ``debug: false``: 1.7.1 defaults to true, which logs every request (uvicorn's access log, the
  gRPC logging interceptor) and sets MLServer's log level to DEBUG (mlserver/rest/server.py,
  mlserver/server.py); upstream made false the default after 1.7.1 because "production settings
  will not want the verbosity" (SeldonIO/MLServer#2307).
* ``host`` 127.0.0.1 and ``http_port`` PEER_PORT; ``grpc_port`` on a free port, as 1.7.1 always
  starts its gRPC server (mlserver/server.py); ``metrics_port`` on a free port, metrics left on,
  as by default (https://docs.seldon.ai/mlserver/user-guide/metrics).
* ``metrics_dir`` and ``environments_dir`` in the temporary folder: their defaults are
  ``.metrics`` and ``.envs`` in the working directory, the checkout (mlserver/settings.py).
* ``model-settings.json``'s ``inputs``: ``image_file`` BYTES with content type ``base64``, so
  that ``MLModel.decode`` gives the images' bytes
  (https://docs.seldon.ai/mlserver/user-guide/content-type).
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.cli import main as mlserver_main
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from bench.peers import work

IMPLEMENTATION = "bench.peers.mlserver_app.DlopsRuntime"  # importable in the spawned workers too
DEFAULT_MAX_BATCH_TIME = "0.01"


class DlopsRuntime(MLModel):
    """The model at PEER_ENTRY with dlops' image work around it (bench/peers/work.py)."""

    async def load(self) -> bool:
        self._model = work.load_model()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # One input, image_file; a batch from the adaptive batcher is one merged request.
        images = self.decode(payload.inputs[0])
        proba, label = work.tensors(self._model, images)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output(work.PROBA, proba),
                ResponseOutput(
                    name=work.LABEL,
                    datatype="BYTES",
                    shape=[len(label)],
                    data=[value.decode() for value in label],
                ),
            ],
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((work.HOST, 0))
        return probe.getsockname()[1]


def server_settings(folder: Path) -> dict[str, Any]:
    """settings.json (https://docs.seldon.ai/mlserver/reference/settings)."""
    return {
        "debug": False,
        "host": work.HOST,
        "http_port": work.port(),
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": int(work.setting("PEER_PARALLEL_WORKERS", str(work.workers()))),
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
    }


def model_settings() -> dict[str, Any]:
    """model-settings.json (https://docs.seldon.ai/mlserver/reference/model-settings)."""
    settings: dict[str, Any] = {
        "name": work.model_name(),
        "implementation": IMPLEMENTATION,
        "inputs": [
            {
                "name": work.INPUT,
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content_type": "base64"},
            }
        ],
        "outputs": [
            {"name": work.PROBA, "datatype": "FP32", "shape": [-1, -1]},
            {"name": work.LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
    }
    if work.max_batch() > 1:
        settings["max_batch_size"] = work.max_batch()
        settings["max_batch_time"] = float(
            work.setting("PEER_MAX_BATCH_TIME", DEFAULT_MAX_BATCH_TIME)
        )
    return settings


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlserver-peer-") as name:
        folder = Path(name)
        (folder / "settings.json").write_text(json.dumps(server_settings(folder)))
        # A model repository of one model, in a folder named after it (custom runtimes' layout).
        model = folder / work.model_name()
        model.mkdir()
        (model / "model-settings.json").write_text(json.dumps(model_settings()))
        # `mlserver start FOLDER`, the documented command, run in this process: the CLI exits
        # by SystemExit, which leaves the with block and removes the folder.
        sys.argv = ["mlserver", "start", str(folder)]
        mlserver_main()


if __name__ == "__main__":
    main()
