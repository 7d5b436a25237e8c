"""The PyTriton peer: NVIDIA PyTriton 0.7.0, Triton Inference Server's C++ HTTP front end and
dynamic batcher in front of Python callables that run the image model.

Run from the checkout (so that ``bench`` and ``dlops`` import from it), in its own environment
(requirements/peers/pytriton.txt; PyTriton needs numpy < 2):

    PEER_ENTRY=.bentoml/models/orientation/<version> PEER_MODEL_NAME=orientation PEER_PORT=8000 \\
        .venv-peers/pytriton/bin/python -m bench.peers.pytriton_app

It binds the model the way PyTriton's documentation shows (https://triton-inference-server.github.io/
pytriton/latest/binding_models/): ``Triton(config=TritonConfig(...))``, ``triton.bind`` with the
inputs, outputs and a ``ModelConfig``, an inference callable decorated with ``@batch``, a list of
callables for several instances, then ``triton.serve()``, the blocking mode
(https://triton-inference-server.github.io/pytriton/latest/initialization/). Each instance loads
its own model with ``work.load_model`` and runs ``work.tensors`` on the batch Triton gives it.

Triton takes the binary tensor extension (``work.oip_binary_body``, ``Content-Type:
application/octet-stream``, ``Inference-Header-Content-Length``); in its JSON form a BYTES element
is the string itself, not base64, so an image file can only go as binary data. The model
batches, so Triton wants every input shape to lead with the batch dimension: ``image_file`` BYTES
[1, 1] for one image (a request of shape [1] is refused: "Expected [-1,1], got [1]"). It answers
``proba`` FP32 [N, K] and ``label`` BYTES [N, 1] as JSON (the request's outputs ask for
``binary_data: false``). ``GET /v2/models/{PEER_MODEL_NAME}/ready`` answers 200 once the model is
loaded: the instances load their models before ``bind``.

Settings: work.py's (PEER_ENTRY, PEER_MODEL_NAME, PEER_PORT, PEER_WORKERS: model instances,
PEER_MAX_BATCH). What is set, and why:

* one inference callable per PEER_WORKERS, each with its own model: "multi-instance model
  inference" (binding_models). Every callable runs in this process, on its own thread; Triton
  starts one Python backend stub process per instance that passes the requests to it.
* ``ModelConfig(max_batch_size=PEER_MAX_BATCH, batcher=DynamicBatcher())``: Triton's dynamic
  batcher with its defaults, the first step of Triton's recommended configuration process: "will
  create batches as large as possible up to the maximum batch size and will not delay when
  forming batches" (https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/
  batcher.html); ``max_queue_delay_microseconds`` stays 0. PEER_MAX_BATCH 1 keeps the batch
  dimension (the same request shape) but every batch holds one request.
* ``http_address`` 127.0.0.1, ``http_port`` PEER_PORT; ``allow_grpc=False``, as only HTTP is
  measured; metrics left on, as by default, on a free port (``metrics_port``); verbose logging
  left off, as by default, since it "can significantly reduce model inference performance"
  (https://triton-inference-server.github.io/pytriton/latest/known_issues/).
* ``LD_LIBRARY_PATH`` led by this interpreter's ``LIBDIR``: Triton "requires that the
  ``libpython3.*.so`` library is accessible" to the Python backend stub (installation guide,
  "Setting Up LD_LIBRARY_PATH": https://triton-inference-server.github.io/pytriton/latest/
  installation/);
  without it the stub loads the system's libpython (Debian's 3.11.2) under this interpreter's
  standard library, and fails.
* SIGTERM stops the server as SIGINT does (``serve`` handles KeyboardInterrupt: it stops Triton
  and removes its workspace under ~/.cache/pytriton).
"""

from __future__ import annotations

import os
import signal
import socket
import sysconfig

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench.peers import work


class Instance:
    """One model instance: its own model and onnxruntime session."""

    def __init__(self) -> None:
        self._model = work.load_model()

    @batch
    def __call__(self, image_file: np.ndarray) -> dict[str, np.ndarray]:
        # image_file: [N, 1] encoded image files, one per request in the batch.
        proba, label = work.tensors(self._model, list(image_file[:, 0]))
        return {work.PROBA: proba, work.LABEL: label.reshape(-1, 1)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((work.HOST, 0))
        return probe.getsockname()[1]


def main() -> None:
    libraries = [sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH")]
    os.environ["LD_LIBRARY_PATH"] = ":".join(path for path in libraries if path)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = TritonConfig(
        http_address=work.HOST,
        http_port=work.port(),
        allow_grpc=False,
        metrics_port=free_port(),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=work.model_name(),
            infer_func=[Instance() for _ in range(work.workers())],
            # object, not bytes: numpy would drop an image's trailing zero bytes (binding_models)
            inputs=[Tensor(name=work.INPUT, dtype=np.object_, shape=(1,))],
            outputs=[
                Tensor(name=work.PROBA, dtype=np.float32, shape=(-1,)),
                Tensor(name=work.LABEL, dtype=bytes, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=work.max_batch(), batcher=DynamicBatcher()),
        )
        triton.serve()


if __name__ == "__main__":
    main()
