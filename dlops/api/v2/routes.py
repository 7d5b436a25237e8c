"""The Open Inference Protocol (KServe V2 REST) for the served model, over the request core.

    GET  /v2                                       server metadata
    GET  /v2/health/live, /v2/health/ready         200, or 503 while the model loads
    GET  /v2/models/{name}[/versions/{v}]          model metadata, from the model's spec
    GET  /v2/models/{name}[/versions/{v}]/ready    200, or 503 while the model loads
    POST /v2/models/{name}[/versions/{v}]/infer    classify a batch

An inference request carries exactly one input, either
  * the model's own input tensor, with its datatype and shape (``[N, ...]``, the other dimensions
    exactly the model's, as the model metadata shows them), fed to the model as it is; or
  * ``image_file``: BYTES [N], encoded image files decoded and preprocessed as ``POST /predict``
    does them,
and gets ``proba`` FP32 [N, K] (K = 1 for a binary model: P(positive)) and ``label`` BYTES [N]
(thresholded for a binary model, the most probable class otherwise).

The classification extension, ``"parameters": {"classification": k}`` on a requested output
(tritonclient's ``InferRequestedOutput(name, class_count=k)``), makes that output BYTES [N, k] of
``"score:index:label"`` strings, best first, k capped at the number of classes; a binary model
ranks as two classes, 0 the negative label (1 - p) and 1 the positive one (p). It answers the
same on ``label`` as on ``proba``: Triton allows it on any output, and the ranking is the answer
either way. (A binary model's ``label`` is thresholded, so with a threshold other than 0.5 its
top-ranked class can differ from ``label``.)

Everything the client sent is checked before the first image is decoded; the core
(dlops/pipeline/core.py) then waits for the model, decodes, preprocesses, infers and counts the
metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dlops import config
from dlops.api.v2 import codec
from dlops.api.v2.codec import BYTES, InferenceRequest, InputTensor, OutputTensor, RequestedOutput
from dlops.api.v2.repository import routes as repository_routes
from dlops.http.errors import printable
from dlops.http.upload import read_body
from dlops.metrics import prediction_metrics
from dlops.model.spec import ModelSpec
from dlops.pipeline.core import Core
from dlops.pipeline.errors import ClientError
from dlops.pipeline.inference import ModelNotReady
from dlops.pipeline.postprocess import Postprocessor
from dlops.pipeline.repository import Repository, Version

logger = logging.getLogger(config.LOGGER_NAME)

# The encoded-image input; the tensor input is named after the ONNX graph's input.
FILES_INPUT = "image_file"
PROBA_OUTPUT = "proba"
LABEL_OUTPUT = "label"
OUTPUT_NAMES = (PROBA_OUTPUT, LABEL_OUTPUT)
PLATFORM = "onnxruntime"
EXTENSIONS = ["binary_tensor_data", codec.CLASSIFICATION]
# The spec's input dtypes as the protocol names them.
V2_DATATYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16"}
# Appended to an image error when the file came as a plain JSON string, the usual mistake.
TEXT_FILE_HINT = (
    " (a JSON string is taken as its UTF-8 bytes, and image files are not text: send them "
    'base64-encoded with "parameters": {"content_type": "base64"} on the input, or as binary '
    "tensor data)"
)


@dataclass(frozen=True)
class ServedModel:
    """The model this server answers for: its name and version in the store, and its spec."""

    name: str
    version: str
    spec: ModelSpec

    @classmethod
    def of(cls, served: Version) -> ServedModel:
        return cls(name=served.name, version=served.version, spec=served.spec)

    @property
    def tensor_input(self) -> str:
        return self.spec.input.name

    @property
    def datatype(self) -> str:
        return V2_DATATYPES[self.spec.input.dtype]

    @property
    def dimensions(self) -> list[int]:
        """The input's shape after the batch dimension, in its own layout."""
        return [int(dim) for dim in self.spec.input.shape(-1)[1:]]

    @property
    def classes(self) -> int:
        """The width of ``proba``: 1 for a binary model (P(positive)), else K."""
        return self.spec.postprocess.classes

    @property
    def ranked_classes(self) -> int:
        """How many classes the classification extension ranks: a binary model has two."""
        return 2 if self.spec.postprocess.is_binary else self.classes

    def inputs(self) -> list[dict[str, Any]]:
        return [
            {
                "name": self.tensor_input,
                "datatype": self.datatype,
                "shape": self.spec.input.shape(),
            },
            {"name": FILES_INPUT, "datatype": BYTES, "shape": [-1]},
        ]

    def outputs(self) -> list[dict[str, Any]]:
        return [
            {"name": PROBA_OUTPUT, "datatype": "FP32", "shape": [-1, self.classes]},
            {"name": LABEL_OUTPUT, "datatype": BYTES, "shape": [-1]},
        ]

    def tensor_shape(self) -> str:
        return "[" + ", ".join(["N", *map(str, self.dimensions)]) + "]"

    def tensor_meaning(self) -> str:
        source = self.spec.input
        if self.spec.preprocess.is_digit:
            return (
                f"MNIST-normalised digits of {source.width}x{source.height} pixels, white on black"
            )
        return f"images preprocessed as the model takes them, in {source.layout} layout"

    def expected_inputs(self) -> str:
        return (
            f"send exactly one input: '{self.tensor_input}' {self.datatype} {self.tensor_shape()} "
            f"({self.tensor_meaning()}) or '{FILES_INPUT}' BYTES [N] (encoded image files, e.g. "
            "PNG or JPEG)"
        )

    def expected_outputs(self) -> str:
        return (
            f"this model answers '{PROBA_OUTPUT}' FP32 [N, {self.classes}] and '{LABEL_OUTPUT}' "
            'BYTES [N] (either as BYTES [N, k] "score:index:label" strings with "parameters": '
            '{"classification": k})'
        )


# -- errors ----------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def client_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ClientError)
    logger.info(
        "%s: client error %d: %s",
        printable(request.url.path),
        error.error_code,
        printable(error.message),
    )
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


def repository() -> Repository:
    return bentoml.get_current_service().repository


def served_version(request: Request) -> Version:
    """The version of the model named in the path, or 404 saying which models are served."""
    return repository().current(request.path_params["name"], request.path_params.get("version"))


def served_model(request: Request) -> ServedModel:
    return ServedModel.of(served_version(request))


# -- health and metadata ---------------------------------------------------------------------


async def server_metadata(request: Request) -> Response:
    # The server is BentoML serving the service "dlops"; the model's version is in its metadata.
    return JSONResponse({"name": "dlops", "version": bentoml.__version__, "extensions": EXTENSIONS})


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


def not_loaded() -> ModelNotReady:
    """503 with Retry-After, like an inference request that arrives while the model loads."""
    return ModelNotReady("the model is not loaded yet (it is loading, or failed to: see the log)")


def models_not_loaded() -> ModelNotReady:
    loading = [entry["name"] for entry in repository().index() if entry["state"] == "LOADING"]
    return ModelNotReady(f"the model is not loaded yet (loading: {', '.join(loading)})")


async def server_ready(request: Request) -> Response:
    if not repository().is_ready:
        raise models_not_loaded()
    return JSONResponse({"ready": True})


async def model_metadata(request: Request) -> Response:
    served = served_version(request)
    model = ServedModel.of(served)
    return JSONResponse(
        {
            "name": model.name,
            "versions": [model.version],
            "platform": PLATFORM,
            "inputs": model.inputs(),
            "outputs": model.outputs(),
            # The execution providers it runs on, once loaded (DLOPS_PROVIDERS).
            "parameters": {"execution_providers": list(served.loader.providers)},
        }
    )


async def model_ready(request: Request) -> Response:
    served = served_version(request)
    if not served.loader.is_ready:
        raise not_loaded()
    return JSONResponse({"name": served.name, "ready": True})


# -- reading the request against the model ---------------------------------------------------


def image_count(tensor: InputTensor, expected: str) -> int:
    """N, the batch dimension, within 1..MAX_BATCH_IMAGES."""
    count = tensor.shape[0]
    if count < 1:
        raise ClientError(
            f"input {tensor.name!r} has shape {tensor.shape}: no images; expected {expected}"
        )
    if count > config.MAX_BATCH_IMAGES:
        raise ClientError(
            f"input {tensor.name!r} holds {count} images; the limit is {config.MAX_BATCH_IMAGES} "
            "per request (DLOPS_MAX_BATCH_IMAGES): split it into several requests",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    return count


def the_input(request: InferenceRequest, model: ServedModel) -> InputTensor:
    """The request's one input, its name, datatype and shape checked against the model."""
    if len(request.inputs) != 1:
        raise ClientError(
            f"the request has {len(request.inputs)} inputs; {model.expected_inputs()}"
        )
    (tensor,) = request.inputs
    if tensor.name == FILES_INPUT and tensor.datatype == BYTES:
        expected = (
            "[N]: one encoded image file (PNG, JPEG, ...) per element (or [N, 1], as Triton's "
            "batching models take it)"
        )
        # [N, 1]: what a client of a Triton model with max_batch_size and dims [1] sends.
        if len(tensor.shape) != 1 and (len(tensor.shape) != 2 or tensor.shape[1] != 1):
            raise ClientError(
                f"input '{FILES_INPUT}' has shape {tensor.shape}; expected {expected}"
            )
        image_count(tensor, expected)
        return tensor
    datatypes = {FILES_INPUT: BYTES, model.tensor_input: model.datatype}
    if tensor.name not in datatypes:
        raise ClientError(
            f"there is no input {codec.shown(tensor.name)}; {model.expected_inputs()}"
        )
    if tensor.datatype != datatypes[tensor.name]:
        raise ClientError(
            f"input {tensor.name!r} has datatype {codec.shown(tensor.datatype)}; expected "
            f"{datatypes[tensor.name]} ({model.expected_inputs()})"
        )
    expected = (
        f"{model.tensor_shape()}: N {model.tensor_meaning()} (or send encoded image files as "
        f"'{FILES_INPUT}' BYTES [N])"
    )
    if not tensor.shape or tensor.shape[1:] != model.dimensions:
        raise ClientError(f"input {tensor.name!r} has shape {tensor.shape}; expected {expected}")
    image_count(tensor, expected)
    return tensor


def model_batch(tensor: InputTensor) -> np.ndarray:
    """The tensor input's values, as the model takes them; NaN and infinities are refused."""
    batch = tensor.array()
    if batch.dtype.kind == "f" and not np.isfinite(batch).all():
        raise ClientError(
            f"input {tensor.name!r} holds NaN or infinite values; send finite numbers, "
            "preprocessed as the model takes them"
        )
    return batch


def requested_outputs(request: InferenceRequest, model: ServedModel) -> list[RequestedOutput]:
    """The outputs to answer, in the order asked for (by default both), k capped at the classes."""
    if request.outputs is None:
        return [RequestedOutput(name, request.binary_output) for name in OUTPUT_NAMES]
    chosen: list[RequestedOutput] = []
    for output in request.outputs:
        if output.name not in OUTPUT_NAMES:
            raise ClientError(
                f"there is no output {codec.shown(output.name)}; {model.expected_outputs()}"
            )
        if output.classification is not None:
            output = replace(
                output, classification=min(output.classification, model.ranked_classes)
            )
        chosen.append(output)
    return chosen


# -- inference -------------------------------------------------------------------------------


async def classify_files(core: Core, files: list[bytes], sent_as_text: bool) -> np.ndarray:
    """Every file through the core, as /predict; the first bad file fails the request."""
    outcome = await core.classify_files(files, stop_at_first_error=True)
    if outcome.errors:
        index = min(outcome.errors)
        error = outcome.errors[index]
        hint = TEXT_FILE_HINT if sent_as_text else ""
        failure = ClientError(
            f"input '{FILES_INPUT}' element {index} (of {len(files)}): {error.message}{hint}",
            error.error_code,
            kind=error.kind,
        )
        failure.counted = True  # by the core
        raise failure
    return outcome.probabilities


def output_tensor(
    output: RequestedOutput, probabilities: np.ndarray, postprocessor: Postprocessor
) -> OutputTensor:
    count = len(probabilities)
    if output.classification is not None:
        k = output.classification
        entries = [
            codec.classification_entry(ranked["proba"], ranked["index"], ranked["label"])
            for row in probabilities
            for ranked in postprocessor.ranked(postprocessor.classes_as_binary(row), k)
        ]
        return OutputTensor(output.name, BYTES, [count, k], entries, output.binary)
    if output.name == PROBA_OUTPUT:
        # JSON carries /predict's very doubles; binary data rounds them to float32.
        shape = [count, probabilities.shape[1]]
        return OutputTensor(output.name, "FP32", shape, probabilities, output.binary)
    labels = [postprocessor.label_of(row) for row in probabilities]
    return OutputTensor(output.name, BYTES, [count], labels, output.binary)


async def answer_infer_request(request: Request, served: Version) -> Response:
    model = ServedModel.of(served)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ClientError(
            f"Content-Encoding {encoding!r} is not accepted; send the request uncompressed",
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )
    core = served.core
    body = await read_body(request, config.MAX_BODY_BYTES)
    header_length = request.headers.get(codec.HEADER_LENGTH)
    # Off the loop when there is much JSON to parse; binary tensor data is only sliced.
    parsed = codec.json_bytes(len(body), header_length)
    inference = await core.parse_off_loop_if_large(
        lambda: codec.decode_request(body, header_length), parsed
    )
    tensor = the_input(inference, model)
    outputs = requested_outputs(inference, model)
    # Reading a tensor's values out of megabytes of JSON or base64 is off the loop, as the parse.
    if tensor.datatype == BYTES:
        files = await core.parse_off_loop_if_large(tensor.elements, parsed)
        probabilities = await classify_files(core, files, tensor.is_text)
    else:
        batch = await core.parse_off_loop_if_large(lambda: model_batch(tensor), parsed)
        probabilities = await core.classify_tensor(batch)
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if inference.id is not None:
        header["id"] = inference.id
    tensors = [output_tensor(output, probabilities, core.postprocessor) for output in outputs]
    payload, header_length = codec.encode_response(header, tensors)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


async def infer(request: Request) -> Response:
    """POST .../infer, with failed requests counted by kind as the direct routes count theirs.

    Predictions, refused images and the stage times are counted by the core.
    """
    try:
        served = served_version(request)
    except ClientError:
        prediction_metrics().failed("not_found")
        raise
    metrics = prediction_metrics(served.name)
    try:
        return await answer_infer_request(request, served)
    except ClientError as error:
        if not error.counted:  # the core counts the images it refuses
            metrics.failed(error.kind)
        raise
    except ModelNotReady:
        metrics.failed("model_not_ready")
        raise
    except Exception:  # a bug of ours: logged with its traceback, answered as JSON anyway
        logger.exception("%s: unexpected error", printable(request.url.path))
        metrics.failed("internal_error")
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "the server failed to process this request (a bug, now in its log)",
        )


# -- the app ---------------------------------------------------------------------------------


def _routes() -> list[Route]:
    routes = [
        *repository_routes,
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
