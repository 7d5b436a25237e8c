"""The work every peer does per image, and the settings every peer app reads.

The work is dlops' own decode, preprocessing and postprocessing (bench/floors.py's ``SpecModel``:
``load_reduced`` at the preprocessor's reduction, ``Preprocessor``, ``Postprocessor``) around one
onnxruntime session with one intra-op thread, for the model stored at ``PEER_ENTRY``. The peers
import it rather than copy it, so that a comparison is of the servers, not of the image code.

Settings (environment), the same for every peer app:

    PEER_ENTRY       a model store entry's directory: model.onnx and the spec.json dlops stored
    PEER_MODEL_NAME  the model's name in Open Inference Protocol routes (default: "model")
    PEER_PORT        the port to listen on, on 127.0.0.1
    PEER_WORKERS     worker processes or replicas (default 1)
    PEER_MAX_BATCH   the largest batch the peer's own batcher may form; 1: no batching (default)

The Open Inference Protocol peers take and give the tensors dlops' /v2 does: input
``image_file`` BYTES [N] (encoded image files), outputs ``proba`` FP32 [N, 1 or K] and ``label``
BYTES [N].
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path

import numpy as np

from bench.floors import SpecModel
from dlops.model.spec import load_spec

HOST = "127.0.0.1"
MODEL_FILE_NAME = "model.onnx"  # dlops.config's, without importing the service's settings
INPUT = "image_file"
PROBA, LABEL = "proba", "label"
OUTPUTS = (PROBA, LABEL)


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"{name} is not set (see bench/peers/work.py)")
    return value


def port() -> int:
    return int(setting("PEER_PORT"))


def workers() -> int:
    return int(setting("PEER_WORKERS", "1"))


def max_batch() -> int:
    return int(setting("PEER_MAX_BATCH", "1"))


def model_name() -> str:
    return setting("PEER_MODEL_NAME", "model")


def model_at(entry: Path) -> SpecModel:
    """The model stored at ``entry``, with the work of dlops' pipeline around it."""
    return SpecModel(entry / MODEL_FILE_NAME, load_spec(entry))


def load_model() -> SpecModel:
    """The model at PEER_ENTRY."""
    return model_at(Path(setting("PEER_ENTRY")))


def tensors(model: SpecModel, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One model call for ``images``: the ``proba`` FP32 [N, 1 or K] and ``label`` BYTES [N]
    tensors dlops' /v2 answers (P(positive) for a binary model, else every class's)."""
    rows = model.probabilities([model.example(data) for data in images])
    labels = [model.postprocessor.answer(row)["label"].encode() for row in rows]
    return rows.astype(np.float32), np.array(labels, dtype=object)


def oip_binary_body(image: bytes) -> tuple[bytes, int]:
    """An Open Inference Protocol request for one image with the binary tensor extension, as
    tritonclient sends one: the JSON header, then the ``image_file`` element as binary data; and
    the header's length, for the ``Inference-Header-Content-Length`` header. The outputs are
    asked for as JSON. The shape is [1, 1], batch first, as Triton takes an input of dims [1]
    for a model that batches (dlops takes [N] and [N, 1])."""
    element = struct.pack("<I", len(image)) + image
    header = {
        "inputs": [
            {
                "name": INPUT,
                "datatype": "BYTES",
                "shape": [1, 1],
                "parameters": {"binary_data_size": len(element)},
            }
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": False}} for name in OUTPUTS],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + element, len(encoded)


def oip_json_body(image: bytes) -> bytes:
    """The same request as plain JSON, shape [1], the image base64-encoded (for servers without
    the binary tensor extension: MLServer)."""
    return json.dumps(
        {
            "inputs": [
                {
                    "name": INPUT,
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"content_type": "base64"},
                    "data": [base64.b64encode(image).decode()],
                }
            ],
            "outputs": [{"name": name} for name in OUTPUTS],
        },
        separators=(",", ":"),
    ).encode()
