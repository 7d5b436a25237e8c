"""The Open Inference Protocol (KServe V2 REST), so that KServe, Triton and MLServer clients work.

    GET  /v2                                       server metadata
    GET  /v2/health/live, /v2/health/ready         200, or 503 while the model loads
    GET  /v2/models/{name}[/versions/{v}]          model metadata, read from the model store
    GET  /v2/models/{name}[/versions/{v}]/ready    200, or 503 while the model loads
    POST /v2/models/{name}[/versions/{v}]/infer    classify a batch

An inference request carries exactly one input, either
  * the model's own input (``input`` for the reference model): UINT8 [N, 28, 28], digits that are
    already MNIST-normalised, fed to the model as they are; or
  * ``image_file``: BYTES [N], encoded image files (PNG, JPEG...) that go through the same
    decoding and normalisation as ``POST /predict``,
and gets two outputs: ``proba`` FP32 [N, 1] and ``label`` BYTES [N]. Tensors travel as JSON or,
with the binary tensor data extension (what ``tritonclient`` sends by default), as raw bytes after
the JSON header. Every error is ``{"error": "..."}`` saying what was wrong and what is expected.

The handlers reach the service instance with ``bentoml.get_current_service()`` and call the same
methods as ``/predict`` (``pixels`` and the loader's classifier), so both protocols answer alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import anyio.to_thread
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dlops import config
from dlops.direct_route import INLINE_MAX_BYTES, large_upload_limiter
from dlops.errors import ClientError
from dlops.inference import ModelNotReady, Prediction
from dlops.metrics import prediction_metrics
from dlops.upload import read_body

logger = logging.getLogger(config.LOGGER_NAME)

# The encoded-image input; the pixel input is named after the ONNX graph's input.
FILES_INPUT = "image_file"
PROBA_OUTPUT = "proba"
LABEL_OUTPUT = "label"
OUTPUT_NAMES = (PROBA_OUTPUT, LABEL_OUTPUT)
PLATFORM = "onnxruntime"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "inference-header-content-length"
# MLServer's convention for binary content in a JSON BYTES tensor: base64 strings, flagged so.
BASE64 = "base64"
# The binary tensor data extension frames each BYTES element as a uint32 length, little-endian.
BYTES_LENGTH = struct.Struct("<I")
# The most of a client's value an error message repeats.
SHOWN_CHARACTERS = 80


@dataclass(frozen=True)
class ServedModel:
    """The model this server answers for, as the model store describes it."""

    name: str
    version: str
    pixels_input: str
    image_size: int

    @classmethod
    def of(cls, service: Any) -> ServedModel:
        stored = service.model  # the bentoml Model behind BentoModel(config.MODEL_TAG)
        metadata = stored.info.metadata
        return cls(
            name=stored.tag.name,
            version=str(stored.tag.version),
            pixels_input=str(metadata["input_name"]),
            image_size=int(metadata["image_size"]),
        )

    def inputs(self) -> list[dict[str, Any]]:
        side = self.image_size
        return [
            {"name": self.pixels_input, "datatype": "UINT8", "shape": [-1, side, side]},
            {"name": FILES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ]

    def outputs(self) -> list[dict[str, Any]]:
        return [
            {"name": PROBA_OUTPUT, "datatype": "FP32", "shape": [-1, 1]},
            {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ]

    def expected_inputs(self) -> str:
        side = self.image_size
        return (
            f"send exactly one input: '{self.pixels_input}' UINT8 [N, {side}, {side}] "
            f"(MNIST-normalised digits) or '{FILES_INPUT}' BYTES [N] (encoded image files, e.g. "
            "PNG or JPEG)"
        )


# -- errors ----------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def client_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ClientError)
    logger.info("%s: client error %d: %s", request.url.path, error.error_code, error.message)
    return error_response(error.error_code, error.message)


async def model_not_ready(request: Request, error: Exception) -> Response:
    return error_response(
        HTTPStatus.SERVICE_UNAVAILABLE, f"{error}; retry shortly", {"retry-after": "1"}
    )


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own errors, in practice 405: a known path with the wrong method."""
    assert isinstance(error, HTTPException)
    allowed = (error.headers or {}).get("Allow", "")
    # Starlette lists HEAD beside every GET; GET is the one to tell people about.
    methods = [method.strip() for method in allowed.split(",") if method.strip() != "HEAD"]
    if error.status_code == HTTPStatus.METHOD_NOT_ALLOWED and methods:
        message = (
            f"{request.method} is not allowed on {request.url.path}: use {' or '.join(methods)}"
        )
    else:
        message = f"{HTTPStatus(error.status_code).phrase}: {error.detail}"
    return error_response(error.status_code, message, error.headers)


def served_model(request: Request) -> ServedModel:
    """The model named in the path, or 404 saying which model and version this server has."""
    model = ServedModel.of(bentoml.get_current_service())
    name = request.path_params["name"]
    version = request.path_params.get("version")
    if name != model.name:
        raise ClientError(
            f"there is no model {name!r}; this server serves {model.name!r} "
            f"(GET /v2/models/{model.name} describes it)",
            HTTPStatus.NOT_FOUND,
        )
    if version is not None and version != model.version:
        raise ClientError(
            f"model {name!r} has no version {version!r}; this server serves version "
            f"{model.version!r} (or leave the version out of the path)",
            HTTPStatus.NOT_FOUND,
        )
    return model


# -- health and metadata ---------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    # The server is BentoML serving the service "dlops"; the model's version is in its metadata.
    return JSONResponse({"name": "dlops", "version": bentoml.__version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


def not_loaded() -> ModelNotReady:
    """503 with Retry-After, like an inference request that arrives while the model loads."""
    return ModelNotReady("the model is not loaded yet (it is loading, or failed to: see the log)")


async def server_ready(request: Request) -> Response:
    if not bentoml.get_current_service().loader.is_ready:
        raise not_loaded()
    return JSONResponse({"ready": True})


async def model_metadata(request: Request) -> Response:
    model = served_model(request)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": PLATFORM,
            "inputs": model.inputs(),
            "outputs": model.outputs(),
        }
    )


async def model_ready(request: Request) -> Response:
    model = served_model(request)
    if not bentoml.get_current_service().loader.is_ready:
        raise not_loaded()
    return JSONResponse({"name": model.name, "ready": True})


# -- inference -------------------------------------------------------------------------------

# Appended to an image error when the file came as a plain JSON string, the usual mistake.
TEXT_FILE_HINT = (
    " (a JSON string is taken as its UTF-8 bytes, and image files are not text: send them "
    'base64-encoded with "parameters": {"content_type": "base64"} on the input, or as binary '
    "tensor data)"
)
REQUEST_SHAPE = (
    '{"inputs": [{"name": ..., "datatype": ..., "shape": [...], "data": [...]}]}, followed by '
    "the binary tensor data when the Inference-Header-Content-Length header gives the JSON's length"
)


@dataclass(frozen=True)
class Batch:
    """The images of one request: pixels the model takes as they are, or files to prepare."""

    pixels: np.ndarray | None = None
    files: list[bytes] | None = None
    files_are_text: bool = False  # JSON strings taken as UTF-8 bytes (not base64)


class BinarySection:
    """The bytes after the JSON header, handed to tensors in the order the JSON lists them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int, tensor: str) -> bytes:
        left = len(self.data) - self.offset
        if size > left:
            raise ClientError(
                f"input {tensor!r} declares binary_data_size {size}, but {left} bytes of binary "
                "data follow the JSON header; send each binary input's bytes after the JSON, in "
                "the order of 'inputs', and the JSON's length in Inference-Header-Content-Length"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def check_consumed(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise ClientError(
                f"{left} bytes after the JSON header belong to no input; the inputs' "
                "binary_data_size parameters must add up to the body's length minus "
                "Inference-Header-Content-Length"
            )


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], BinarySection]:
    """The JSON inference request and the binary tensor data after it (binary data extension)."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            size = 0
        if not 0 < size <= len(body):
            raise ClientError(
                f"Inference-Header-Content-Length is {shown(header_length)}; expected the length "
                f"in bytes of the JSON object at the start of the body (1 to {len(body)})"
            )
        header, binary = body[:size], body[size:]
    try:
        request = json.loads(header)
    # Invalid JSON, bytes that are not UTF-8 text, or arrays nested thousands deep.
    except (ValueError, RecursionError) as error:
        raise ClientError(
            f"the inference request is not valid JSON ({error}); expected {REQUEST_SHAPE}"
        ) from None
    if not isinstance(request, dict):
        raise ClientError(
            f"the inference request is a JSON {type(request).__name__}; expected {REQUEST_SHAPE}"
        )
    return request, BinarySection(binary)


def shown(value: Any) -> str:
    """A client's value quoted in an error message, cut short: messages are logged too."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + "..."


def parameters_of(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ClientError(f"{where}: 'parameters' must be a JSON object, got {shown(parameters)}")
    return parameters


def boolean_parameter(parameters: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ClientError(
            f"{where}: the parameter {key!r} must be true or false, got {shown(value)}"
        )
    return value


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def tensor_binary(tensor: dict[str, Any], name: str, binary: BinarySection) -> bytes | None:
    """The input's binary tensor data, or None when its data is in the JSON."""
    parameters = parameters_of(tensor, f"input {name!r}")
    if "shared_memory_region" in parameters:
        raise ClientError(
            f"input {name!r} refers to shared memory, which this server does not offer; send the "
            "data in the request (JSON 'data', or binary tensor data)"
        )
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise ClientError(
                f"input {name!r} has neither 'data' nor a 'binary_data_size' parameter; "
                f"expected {REQUEST_SHAPE}"
            )
        return None
    if "data" in tensor:
        raise ClientError(
            f"input {name!r} has both 'data' and a 'binary_data_size' parameter; send its data "
            "one way only"
        )
    if not is_count(size):
        raise ClientError(
            f"input {name!r}: binary_data_size must be a whole number of bytes, got {shown(size)}"
        )
    return binary.take(size, name)


def image_count(name: str, shape: list[int], expected: str) -> int:
    """N, the batch dimension, within 1..MAX_BATCH_IMAGES."""
    count = shape[0]
    if count < 1:
        raise ClientError(f"input {name!r} has shape {shape}: no images; expected {expected}")
    if count > config.MAX_BATCH_IMAGES:
        raise ClientError(
            f"input {name!r} holds {count} images; the limit is {config.MAX_BATCH_IMAGES} per "
            "request (DLOPS_MAX_BATCH_IMAGES): split it into several requests",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    return count


JSON_KINDS = {"f": "decimal numbers", "b": "booleans", "U": "strings", "O": "mixed values"}


def read_pixels(
    tensor: dict[str, Any], shape: list[int], raw: bytes | None, model: ServedModel
) -> np.ndarray:
    name, side = model.pixels_input, model.image_size
    expected = (
        f"[N, {side}, {side}]: N MNIST-normalised digits of {side}x{side} pixels, white on black "
        f"(or send encoded image files as '{FILES_INPUT}' BYTES [N])"
    )
    if len(shape) != 3 or shape[1:] != [side, side]:
        raise ClientError(f"input {name!r} has shape {shape}; expected {expected}")
    count = image_count(name, shape, expected)
    needed = count * side * side
    if raw is not None:
        if len(raw) != needed:
            raise ClientError(
                f"input {name!r} has {len(raw)} bytes of binary data; UINT8 {shape} needs {needed}"
            )
        return np.frombuffer(raw, dtype=np.uint8).reshape(count, side, side)
    try:
        values = np.array(tensor["data"])
    except (ValueError, TypeError, OverflowError):  # ragged nesting, huge numbers
        values = np.array(None)
    if values.dtype.kind not in "iu":
        found = JSON_KINDS.get(values.dtype.kind, "something else")
        raise ClientError(
            f"input {name!r}: 'data' must be a list (flat, or nested row-major) of {needed} whole "
            f"numbers from 0 to 255; it holds {found}"
        )
    if values.size != needed:
        raise ClientError(
            f"input {name!r}: 'data' holds {values.size} numbers; UINT8 {shape} needs {needed}"
        )
    if values.min() < 0 or values.max() > 255:
        raise ClientError(
            f"input {name!r}: UINT8 values must be from 0 to 255; found {values.min()} to "
            f"{values.max()}"
        )
    return values.astype(np.uint8).reshape(count, side, side)


def split_bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """BYTES binary tensor data: each element is a uint32 length (little-endian), then its bytes."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) < count:
        if offset + BYTES_LENGTH.size > len(raw):
            break
        (length,) = BYTES_LENGTH.unpack_from(raw, offset)
        offset += BYTES_LENGTH.size
        if offset + length > len(raw):
            raise ClientError(
                f"input '{FILES_INPUT}': element {len(elements)} declares {length} bytes but "
                f"{len(raw) - offset} remain; each BYTES element is a 4-byte little-endian length "
                "followed by that many bytes"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if len(elements) != count or offset != len(raw):
        raise ClientError(
            f"input '{FILES_INPUT}' has shape [{count}] but its {len(raw)} bytes of binary data "
            f"do not hold exactly {count} elements, each a 4-byte little-endian length followed "
            "by that many bytes"
        )
    return elements


def read_files(tensor: dict[str, Any], shape: list[int], raw: bytes | None) -> Batch:
    expected = "[N]: one encoded image file (PNG, JPEG, ...) per element"
    if len(shape) != 1:
        raise ClientError(f"input '{FILES_INPUT}' has shape {shape}; expected {expected}")
    count = image_count(FILES_INPUT, shape, expected)
    if raw is not None:
        return Batch(files=split_bytes_elements(raw, count))
    data = tensor["data"]
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ClientError(
            f"input '{FILES_INPUT}': 'data' must be a list of {count} strings, one per image file"
        )
    if len(data) != count:
        raise ClientError(
            f"input '{FILES_INPUT}': 'data' holds {len(data)} strings; shape {shape} needs {count}"
        )
    encoding = parameters_of(tensor, f"input '{FILES_INPUT}'").get("content_type")
    if encoding is None:
        # surrogatepass: a JSON "\ud800" escape still becomes bytes, which then fail as an image.
        return Batch(
            files=[item.encode("utf-8", "surrogatepass") for item in data], files_are_text=True
        )
    if encoding != BASE64:
        raise ClientError(
            f"input '{FILES_INPUT}': content_type {shown(encoding)} is not known; use "
            '"base64" for base64-encoded files, or leave it out for plain strings'
        )
    files: list[bytes] = []
    for index, item in enumerate(data):
        try:
            files.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError) as error:
            raise ClientError(
                f"input '{FILES_INPUT}': element {index} is not valid base64 ({error}); "
                'content_type "base64" expects each string to be a whole file, base64-encoded'
            ) from None
    return Batch(files=files)


def read_batch(request: dict[str, Any], binary: BinarySection, model: ServedModel) -> Batch:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        found = f"{len(inputs)} inputs" if isinstance(inputs, list) else "no 'inputs' list"
        raise ClientError(f"the request has {found}; {model.expected_inputs()}")
    (tensor,) = inputs
    if not isinstance(tensor, dict):
        raise ClientError(f"an input must be a JSON object; {model.expected_inputs()}")
    name = tensor.get("name")
    datatypes = {model.pixels_input: "UINT8", FILES_INPUT: "BYTES"}
    if not isinstance(name, str) or name not in datatypes:
        raise ClientError(f"there is no input {shown(name)}; {model.expected_inputs()}")
    datatype = tensor.get("datatype")
    if datatype != datatypes[name]:
        raise ClientError(
            f"input {name!r} has datatype {shown(datatype)}; expected {datatypes[name]} "
            f"({model.expected_inputs()})"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(is_count(dim) for dim in shape):
        raise ClientError(
            f"input {name!r} has shape {shown(shape)}; expected a list of whole numbers "
            f"({model.expected_inputs()})"
        )
    raw = tensor_binary(tensor, name, binary)
    binary.check_consumed()
    if name == FILES_INPUT:
        return read_files(tensor, shape, raw)
    return Batch(pixels=read_pixels(tensor, shape, raw, model))


def requested_outputs(request: dict[str, Any]) -> list[tuple[str, bool]]:
    """(output name, as binary data?) in the order the client asked for; by default both."""
    binary_default = boolean_parameter(
        parameters_of(request, "the request"), "binary_data_output", False, "the request"
    )
    outputs = request.get("outputs")
    if not outputs:
        return [(name, binary_default) for name in OUTPUT_NAMES]
    expected = f"this model answers '{PROBA_OUTPUT}' FP32 [N, 1] and '{LABEL_OUTPUT}' BYTES [N]"
    if not isinstance(outputs, list):
        raise ClientError(f"'outputs' must be a list of {{\"name\": ...}} objects; {expected}")
    chosen: list[tuple[str, bool]] = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUT_NAMES:
            raise ClientError(f"there is no output {shown(name)}; {expected}")
        if name in (known for known, _ in chosen):
            raise ClientError(f"output {name!r} is requested twice; {expected}")
        parameters = parameters_of(output, f"output {name!r}")
        unsupported = {"classification", "shared_memory_region"} & parameters.keys()
        if unsupported:
            raise ClientError(
                f"output {name!r}: the parameter {sorted(unsupported)[0]!r} (an extension this "
                "server does not offer) is not supported; request the output by name, with "
                "binary_data true or false"
            )
        where = f"output {name!r}"
        chosen.append((name, boolean_parameter(parameters, "binary_data", binary_default, where)))
    return chosen


def encode_output(name: str, answers: list[Prediction], binary: bool) -> tuple[dict, bytes]:
    """The output's JSON description and, when it travels as binary data, its bytes."""
    count = len(answers)
    if name == PROBA_OUTPUT:
        # JSON carries the same double as /predict; binary data is FP32, so rounded to float32.
        data: list[Any] = [answer.proba for answer in answers]
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": [count, 1]}
        raw = np.asarray(data, dtype="<f4").tobytes() if binary else b""
    else:
        data = [answer.label for answer in answers]
        tensor = {"name": name, "datatype": "BYTES", "shape": [count]}
        encoded = [label.encode() for label in data]
        raw = b"".join(BYTES_LENGTH.pack(len(item)) + item for item in encoded) if binary else b""
    if binary:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = data
    return tensor, raw


def prepare_files(service: Any, batch: Batch) -> np.ndarray:
    """Every file through the service's own image pipeline; the first bad file fails the request."""
    assert batch.files is not None
    pixels: list[np.ndarray] = []
    for index, file in enumerate(batch.files):
        try:
            pixels.append(service.pixels(file))
        except ClientError as error:
            hint = TEXT_FILE_HINT if batch.files_are_text else ""
            raise ClientError(
                f"input '{FILES_INPUT}' element {index} (of {len(batch.files)}): "
                f"{error.message}{hint}",
                error.error_code,
                kind=error.kind,
            ) from None
    return np.stack(pixels)


def answer_inference(
    service: Any, model: ServedModel, body: bytes, header_length: str | None
) -> Response:
    request, binary = split_body(body, header_length)
    batch = read_batch(request, binary, model)
    outputs = requested_outputs(request)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(f"'id' must be a string, got {shown(request_id)}")
    # Everything the client sent is checked before the first image is decoded.
    images = batch.pixels if batch.pixels is not None else prepare_files(service, batch)
    classifier = service.loader.get(timeout=config.MODEL_WAIT_SECONDS)
    answers = classifier.predict(images)
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        header["id"] = request_id
    encoded = [encode_output(name, answers, binary) for name, binary in outputs]
    header["outputs"] = [tensor for tensor, _ in encoded]
    payload = json.dumps(header).encode()
    if not any(binary for _, binary in outputs):
        return Response(payload, media_type="application/json")
    return Response(
        payload + b"".join(raw for _, raw in encoded),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(payload))},
    )


async def infer(request: Request) -> Response:
    """POST .../infer, with failed requests counted by kind as the direct routes count theirs.

    Predictions and the decode / preprocess / infer times are counted inside the service's
    methods this calls.
    """
    try:
        return await answer_infer_request(request)
    except ClientError as error:
        prediction_metrics().failed(error.kind)
        raise
    except ModelNotReady:
        prediction_metrics().failed("model_not_ready")
        raise


async def answer_infer_request(request: Request) -> Response:
    model = served_model(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ClientError(
            f"Content-Encoding {encoding!r} is not accepted; send the request uncompressed",
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )
    service = bentoml.get_current_service()
    body = await read_body(request, config.MAX_BODY_BYTES)
    answer = partial(answer_inference, service, model, body, request.headers.get(HEADER_LENGTH))
    if not service.loader.is_ready:  # waiting for the model must not hold up the event loop
        return await anyio.to_thread.run_sync(answer)
    if len(body) > INLINE_MAX_BYTES:  # many or large files: decode them off the event loop
        return await anyio.to_thread.run_sync(answer, limiter=large_upload_limiter())
    return answer()


# -- the app ---------------------------------------------------------------------------------


def _routes() -> list[Route]:
    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", server_live),
        Route("/v2/health/ready", server_ready),
    ]
    for model_path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(model_path, model_metadata),
            Route(f"{model_path}/ready", model_ready),
            Route(f"{model_path}/infer", infer, methods=["POST"]),
        ]
    return routes


Handler = Callable[[Request, Exception], Awaitable[Response]]
_handlers: dict[Any, Handler] = {
    ClientError: client_error,
    ModelNotReady: model_not_ready,
    HTTPException: http_error,
}

# Mounted at "/" with full paths (service.py), not at "/v2": a mount at "/v2" only matches
# "/v2/...", so GET /v2 (server metadata, which tritonclient asks for) would be redirected.
# BentoML's PassiveMount routes a request here only when one of these routes matches it.
app = Starlette(routes=_routes(), exception_handlers=_handlers)
