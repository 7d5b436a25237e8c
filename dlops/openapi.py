"""The OpenAPI document at /docs.json and /openapi.json: BentoML's, told the truth.

BentoML 1.4.40 describes only its own routes, with errors it never answers here (400/404/500 as
``{"error", "detail"}``), version "None" and its own team as the contact. This document keeps
its request and success schemas (the Swagger form and BentoML's clients rely on them) and:

- names the served model and its version, the dlops version and the project;
- lists, per operation, every status it answers, each as ``{"error": "..."}`` with an example;
- adds the routes BentoML does not know of: the Open Inference Protocol under /v2, the /ui page;
- with ``API_KEY`` set, declares the key (Swagger's *Authorize*) and the 401 of the routes that
  need it (dlops/auth.py decides which).

It is built once per worker, on the first request for it, from the worker's service instance.
"""

from __future__ import annotations

import inspect
import json
from http import HTTPStatus
from typing import Any

from dlops import __version__, config
from dlops.auth import is_open
from dlops.compat import bentoml_openapi_document
from dlops.spec import ModelSpec

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Every error: one key, `error`, saying what was wrong and what is expected.",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": False,
}
MiB = 2**20

# What each status means on the prediction routes, and a body it really answers (abridged where
# the message repeats how to send an image).
PREDICT_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "The upload is not an image, is empty or truncated; the multipart body has no field "
        "`file` or is malformed; `top_k` is not a whole number; the image would cost far more "
        "to decode than it is worth (an aspect ratio beyond 100:1, a progressive JPEG of over "
        "100 scans, over 1 MiB of PNG text)",
        "the upload (6 bytes) is not an image in a format this service reads; expected a PNG, "
        "JPEG, GIF, BMP, WebP, TIFF, HEIC/HEIF or AVIF image",
    ),
    401: (
        "`API_KEY` is set and the request has no valid key",
        "/predict needs an API key: send the key as the header 'Authorization: Bearer <key>' "
        "(or 'X-API-Key: <key>')",
    ),
    408: (
        f"The body did not fully arrive within {config.REQUEST_TIMEOUT_SECONDS} s",
        f"the request body did not arrive within {config.REQUEST_TIMEOUT_SECONDS} s; send the "
        "whole request at once",
    ),
    413: (
        f"The body is over {config.MAX_BODY_BYTES / MiB:.1f} MiB; the image declares more than "
        f"{config.MAX_IMAGE_PIXELS:,} pixels, or needs more memory than the worker's budget; "
        f"the request's images declare more than {config.MAX_REQUEST_PIXELS:,} pixels",
        f"the upload is 10.5 MiB; the limit is {config.MAX_BODY_BYTES / MiB:.1f} MiB. Send a "
        "smaller image",
    ),
    415: (
        "The body is neither multipart/form-data nor an image/* or application/octet-stream",
        "Content-Type 'application/json' is not accepted. Send one image as the "
        "multipart/form-data field 'file'",
    ),
    422: (
        "Digit models: the image has no ink (a blank or uniform picture)",
        "the image is blank: it is one uniform colour (or fully transparent) with no visible "
        "strokes; expected a handwritten digit",
    ),
    503: (
        f"The model is still loading after {config.MODEL_WAIT_SECONDS:g} s, or the server was "
        f"too busy to answer within {config.REQUEST_TIMEOUT_SECONDS} s (with Retry-After)",
        "the model is not loaded yet (it is loading, or failed to: see the log); retry shortly",
    ),
}
BATCH_TOO_MANY = (
    f"More than {config.MAX_BATCH_IMAGES} images, or the body is over "
    f"{config.MAX_BODY_BYTES / MiB:.1f} MiB",
    f"the request holds 65 images; the limit is {config.MAX_BATCH_IMAGES}",
)
NOT_FOUND = (
    "No such model (or version) on this server",
    "there is no model 'digits'; this server serves 'MODEL' (GET /v2/models/MODEL describes it)",
)
NOT_READY = (
    "The model is still loading (with Retry-After)",
    "the model is not loaded yet (it is loading, or failed to: see the log); retry shortly",
)
V2_BAD_REQUEST = (
    "The inference request is malformed or does not fit the model (see GET /v2/models/MODEL)",
    "input 'input' has datatype 'FP32'; expected UINT8",
)
V2_MEDIA = ("The body is compressed", "Content-Encoding 'gzip' is not accepted")

TAG_PREDICT = "Service APIs"  # BentoML's name: its HTTP client looks for it
TAG_V2 = "Open Inference Protocol (KServe V2)"
TAG_PAGE = "Page"
TAGS = [
    {"name": TAG_PREDICT, "description": "Classify images: `POST /predict`, `/predict_batch`."},
    {
        "name": TAG_V2,
        "description": "The Open Inference Protocol (KServe V2 REST), for KServe, Triton and "
        "MLServer clients; the binary tensor extension is not described here (see the README).",
    },
    {"name": TAG_PAGE, "description": "The page to draw or upload an image (`/ui`)."},
    {"name": "Infrastructure", "description": "Health, readiness and Prometheus metrics."},
]


def error_response(description: str, message: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF, "example": {"error": message}}},
    }


def json_response(description: str, example: Any, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def example_answer(spec: ModelSpec) -> dict[str, Any]:
    """What /predict answers for one image, in this model's labels.

    For a binary model, the reference model's real answer to tests/fixtures/digits/
    test0300_digit3.png (tests/test_docs.py checks it against the server); for a multi-class or
    multi-label one, the shape of the answer with illustrative probabilities.
    """
    post = spec.postprocess
    if post.is_binary:
        return {"proba": 0.9888304935125374, "label": post.labels[1]}
    shown = min(post.top_k, post.classes, 3)
    probabilities = [0.92, 0.05, 0.02][:shown]
    ranked = [
        {"label": post.labels[i], "index": i, "proba": probabilities[i]} for i in range(shown)
    ]
    if post.is_multi_label:
        found = [entry for entry in ranked if entry["proba"] >= (post.threshold or 0.5)]
        return {"labels": found, "threshold": post.threshold, "top_k": ranked}
    return {"label": ranked[0]["label"], "proba": ranked[0]["proba"], "top_k": ranked}


def prediction_errors(spec: ModelSpec, *statuses: int) -> dict[str, Any]:
    if not spec.preprocess.is_digit:
        statuses = tuple(status for status in statuses if status != 422)
    return {str(status): error_response(*PREDICT_ERRORS[status]) for status in statuses}


def correct_prediction_routes(paths: dict[str, Any], spec: ModelSpec) -> None:
    """BentoML's two operations, with their real statuses, the query and raw-body uploads."""
    top_k = {
        "name": "top_k",
        "in": "query",
        "required": False,
        "description": "Multi-class models: how many ranked classes to answer (0: all); "
        "binary models ignore it",
        "schema": {"type": "integer", "minimum": 0},
    }
    predict = paths["/predict"]["post"]
    curl = "curl -F file=@digit.png http://HOST/predict"
    answer = example_answer(spec)
    predict["summary"] = "Classify one image"
    predict["description"] = (
        f"{inspect.cleandoc(predict.get('description', ''))}\n\n"
        f"```console\n$ {curl}\n{json.dumps(answer)}\n```\n\n"
        "Or send the raw image as the body, with its `Content-Type` (`image/png`, ...)."
    )
    raw_image = {"schema": {"type": "string", "format": "binary"}}
    for operation, errors in (
        (predict, prediction_errors(spec, 400, 408, 413, 415, 422, 503)),
        (paths["/predict_batch"]["post"], prediction_errors(spec, 400, 408, 415, 503)),
    ):
        operation["parameters"] = [top_k]
        ok = operation["responses"][str(HTTPStatus.OK.value)]
        operation["responses"] = {str(HTTPStatus.OK.value): ok, **errors}
        if operation is predict:
            for media in ("image/png", "image/jpeg"):
                operation["requestBody"]["content"][media] = raw_image
            ok["content"]["application/json"]["example"] = answer
    batch = paths["/predict_batch"]["post"]
    batch["summary"] = "Classify many images"
    batch["responses"]["413"] = error_response(*BATCH_TOO_MANY)
    batch["responses"] = dict(sorted(batch["responses"].items()))
    batch["description"] = inspect.cleandoc(batch.get("description", ""))
    bad_image = {"error": PREDICT_ERRORS[400][1], "status": 400}
    batch["responses"]["200"]["content"]["application/json"]["example"] = [answer, bad_image]


def path_parameter(name: str, description: str, example: str) -> dict[str, Any]:
    schema = {"type": "string", "example": example}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def open_inference_paths(spec: ModelSpec, name: str, version: str) -> dict[str, Any]:
    """GET /v2 ... and POST .../infer (dlops/v2/routes.py), as far as JSON describes them."""
    model_name = path_parameter("name", "The served model's name", name)
    model_version = path_parameter("version", "The served model's version", version)
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    infer_request = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": tensor},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    }
    # A tiny PNG would not make a useful example; base64 of a real image is what clients send.
    infer_example = {
        "inputs": [
            {
                "name": "image_file",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"content_type": "base64"},
                "data": ["<base64 of a PNG or JPEG file>"],
            }
        ]
    }
    answer = example_answer(spec)
    if spec.postprocess.is_binary:
        probabilities, label = [answer["proba"]], answer["label"]
    elif spec.postprocess.is_multi_label:
        probabilities = [answer["top_k"][0]["proba"], "..."]
        label = ", ".join(entry["label"] for entry in answer["labels"])
    else:
        probabilities, label = [answer["proba"], "..."], answer["label"]
    infer_answer = {
        "model_name": name,
        "model_version": version,
        "outputs": [
            {
                "name": "proba",
                "datatype": "FP32",
                "shape": [1, spec.postprocess.classes],
                "data": probabilities,
            },
            {"name": "label", "datatype": "BYTES", "shape": [1], "data": [label]},
        ],
    }
    any_object = {"type": "object"}

    def get(summary: str, example: Any, errors: dict[int, tuple[str, str]]) -> dict[str, Any]:
        responses = {"200": json_response("OK", example, any_object)}
        responses.update({str(status): error_response(*error) for status, error in errors.items()})
        return {"get": {"tags": [TAG_V2], "summary": summary, "responses": responses}}

    paths: dict[str, Any] = {
        "/v2": get("Server metadata", {"name": "dlops", "extensions": ["binary_tensor_data"]}, {}),
        "/v2/health/live": get("Live", {"live": True}, {}),
        "/v2/health/ready": get("Ready", {"ready": True}, {503: NOT_READY}),
    }
    for prefix, parameters in (
        ("/v2/models/{name}", [model_name]),
        ("/v2/models/{name}/versions/{version}", [model_name, model_version]),
    ):
        metadata = get("Model metadata", {"name": name, "versions": [version]}, {404: NOT_FOUND})
        ready = get("Model ready", {"name": name, "ready": True}, {404: NOT_FOUND, 503: NOT_READY})
        infer_errors = {
            "400": error_response(*V2_BAD_REQUEST),
            "404": error_response(*NOT_FOUND),
            "413": error_response(*BATCH_TOO_MANY),
            "415": error_response(*V2_MEDIA),
            "408": error_response(*PREDICT_ERRORS[408]),
            "503": error_response(*PREDICT_ERRORS[503]),
        }
        if spec.preprocess.is_digit:
            infer_errors["422"] = error_response(*PREDICT_ERRORS[422])
        infer = {
            "post": {
                "tags": [TAG_V2],
                "summary": "Classify a batch of images (or tensors)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": infer_request, "example": infer_example}
                    },
                },
                "responses": {
                    "200": json_response("The model's outputs", infer_answer, any_object),
                    **dict(sorted(infer_errors.items())),
                },
            }
        }
        for suffix, item in (("", metadata), ("/ready", ready), ("/infer", infer)):
            for operation in item.values():
                operation["parameters"] = parameters
            paths[prefix + suffix] = item
    return paths


def page_paths() -> dict[str, Any]:
    """The /ui page (dlops/ui.py): described so that schema-driven clients and fuzzers see it."""
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/ui": {
            "get": {
                "tags": [TAG_PAGE],
                "summary": "Redirects to /ui/",
                "responses": {"307": {"description": "To the page, /ui/"}},
            }
        },
        "/ui/": {
            "get": {
                "tags": [TAG_PAGE],
                "summary": "The page: draw or upload an image and see the answer",
                "responses": {"200": {"description": "The page", "content": html}},
            }
        },
        "/ui/model.json": {
            "get": {
                "tags": [TAG_PAGE],
                "summary": "What the page adapts to: the served model",
                "responses": {
                    "200": json_response(
                        "The model's name, version, input kind and labels",
                        {"name": "binary_classifier_3", "input": "digit", "binary": True},
                        {"type": "object"},
                    )
                },
            }
        },
    }


def require_key(paths: dict[str, Any]) -> None:
    """With API_KEY set: the key's schemes on every operation that needs it, and its 401."""
    for path, item in paths.items():
        for method, operation in item.items():
            if not is_open(method.upper(), path):
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation["responses"]["401"] = error_response(*PREDICT_ERRORS[401])
                operation["responses"] = dict(sorted(operation["responses"].items()))


def openapi_document(service: Any, instance: Any) -> dict[str, Any]:
    """The corrected document for ``service`` (a bentoml.Service) serving ``instance``'s model."""
    # Through JSON: a copy of BentoML's cached parts, with its integer status keys as strings.
    document = json.loads(json.dumps(bentoml_openapi_document(service)))
    default = instance.repository.current()
    spec: ModelSpec = default.spec
    name, version = default.name, default.version
    paths = document["paths"]
    correct_prediction_routes(paths, spec)
    paths["/readyz"]["get"]["responses"]["503"] = error_response(
        "The model is not loaded and warmed up yet", "Service Unavailable"
    )
    paths.update(open_inference_paths(spec, name, version))
    paths.update(page_paths())
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # BentoML's error models ({"error", "detail"}) and its task model describe nothing here.
    for unused in ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse"):
        schemas.pop(unused, None)
    schemas["Error"] = ERROR_SCHEMA
    if config.API_KEY is not None:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        require_key(paths)
    document["tags"] = TAGS
    document["info"] = {
        "title": f"dlops: {name}",
        "version": __version__,
        "description": (
            f"Serves the model **{name}**, version `{version}`, with dlops {__version__}.\n\n"
            f"{document['info'].get('description', '')}\n\n"
            'Every error is `{"error": "..."}`. Any route answers 404 for a path it does '
            "not have, 405 for a method it does not take (e.g. `GET /predict`) and 431 for a "
            f"request line and headers over {config.MAX_HEAD_BYTES:,} bytes or more than "
            f"{config.MAX_HEADERS} headers."
        ),
        "contact": {"name": "dlops"},
        "x-model": {"name": name, "version": version},
    }
    return document
