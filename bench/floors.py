"""The two floors `make bench` measures dlops against: the least work any Python server must do.

    uvicorn bench.floors:http_floor    reads the upload, answers a constant JSON
    uvicorn bench.floors:lean          reads the upload, cuts out the multipart part, decodes it
                                       with Pillow, runs onnxruntime (one thread), sigmoid, JSON

Raw ASGI under uvicorn (httptools, uvloop), no framework and no validation: what is left of a
request when everything that is not the work is taken away. The lean floor feeds the digit
model the raw pixels, as the seed app does; dlops does more work per image (its
preprocessing), so dlops / lean is a conservative measure of what dlops' path costs beyond it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

MODEL = Path(__file__).resolve().parent.parent / "models" / "binary_classifier_3.onnx"
CONSTANT = json.dumps({"proba": 0.5, "label": "3"}).encode()
HEADERS = [(b"content-type", b"application/json")]


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, body: bytes) -> None:
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def http_floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _body(receive)
    await _answer(send, CONSTANT)


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])


SESSION = _session()
INPUT = SESSION.get_inputs()[0].name
SHAPE = [1 if not isinstance(dim, int) else dim for dim in SESSION.get_inputs()[0].shape]
# The digit model takes uint8 pixels as they are (as the seed app feeds them); a float model,
# pixels scaled to 0..1.
UINT8_INPUT = SESSION.get_inputs()[0].type == "tensor(uint8)"


def _first_part(body: bytes) -> bytes:
    """The content of the first multipart part: between its blank line and the next boundary."""
    boundary = body[: body.index(b"\r\n")]
    start = body.index(b"\r\n\r\n") + 4
    return body[start : body.index(b"\r\n" + boundary, start)]


async def lean(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    body = await _body(receive)
    if scope["method"] != "POST":
        await _answer(send, CONSTANT)  # the readiness probe
        return
    image = Image.open(io.BytesIO(_first_part(body))).convert("L")
    pixels = np.asarray(image, dtype=np.uint8).reshape(SHAPE)
    if not UINT8_INPUT:
        pixels = pixels.astype(np.float32) / 255.0
    logit = float(SESSION.run(None, {INPUT: pixels})[0].ravel()[0])
    proba = 1.0 / (1.0 + np.exp(-logit))
    await _answer(
        send, json.dumps({"proba": proba, "label": "3" if proba > 0.5 else "no 3"}).encode()
    )
