"""The OpenAPI document at /docs.json and /openapi.json: BentoML's, told the truth.

BentoML 1.4.40 describes only its own routes, with errors it never answers here (400/404/500 as
``{"error", "detail"}``), version "None" and its own team as the contact. This document keeps
its request and success schemas (the Swagger form and BentoML's clients rely on them) and:

- names the served models, their versions and the default one, the dlops version and the project;
- lists, per operation, every status it answers, each as ``{"error": "..."}`` with an example;
- adds the routes BentoML does not know of: each model's own ``/models/{name}/predict`` and
  ``/predict_batch`` (a section per model, its examples in its labels), ``GET /models`` and the
  repository extension, the Open Inference Protocol under /v2, the /ui page;
- with ``API_KEY`` set, declares the key (Swagger's *Authorize*) and the 401 of the routes that
  need it (dlops/http/auth.py decides which).

It is built in a worker from the models it serves (dlops/api/docs.py builds it again when they
change).
"""

from __future__ import annotations

import copy
import inspect
import json
from http import HTTPStatus
from typing import Any

from dlops import __version__, config
from dlops.api.v2.repository import MAX_REQUEST_BYTES, NAME_RULE, OFF
from dlops.compat import bentoml_openapi_document
from dlops.http.auth import is_open
from dlops.model.spec import ModelSpec
from dlops.pipeline.errors import ClientError
from dlops.pipeline.repository import Repository, Version, routes_of

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
    404: (
        "The model is not served now: it was unloaded through /v2/repository (GET /models lists "
        "the models served)",
        "the model 'digits_10' is not loaded (unloaded); load it with POST "
        "/v2/repository/models/digits_10/load. This server serves 'binary_classifier_3' (GET "
        "/models)",
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

REPOSITORY_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "The body is neither empty nor a JSON object, `parameters` holds more than `version`, or "
        f"the name or version is not a store name ({NAME_RULE} characters)",
        "parameters.version 'Latest!' is not a store version: " + NAME_RULE,
    ),
    403: (
        "The extension is off: the server was started with neither `API_KEY` nor "
        "`DLOPS_REPOSITORY_API=1`",
        OFF,
    ),
    408: PREDICT_ERRORS[408],
    409: (
        "This worker made the change, but another worker could not follow it and serves what it "
        "served before",
        "this worker serves the change, but not every worker could follow (worker 41: the model "
        "digits_10:v2 did not load ...); they serve what they served before",
    ),
    413: (
        f"The body is over {MAX_REQUEST_BYTES // 1024} KiB",
        f"the upload is 1.0 MiB; the limit is {MAX_REQUEST_BYTES / MiB:.1f} MiB. Send a smaller "
        "image (a digit needs only a few kilobytes).",
    ),
    504: (
        f"This worker made the change, but the others did not all follow within "
        f"{config.CONVERGE_SECONDS} s",
        "the change is made in this worker, but 1 of 2 workers have not applied the change yet "
        f"after {config.CONVERGE_SECONDS} s; GET /v2/repository/index shows where each model "
        "stands",
    ),
}
LOAD_NOT_FOUND = (
    "The BentoML model store has no such model (or version): import it first",
    "the model digits:latest is not in the BentoML model store (/home/dlops/bentoml/models); "
    "run python import_model.py ..., or set BENTOML_HOME to the store that holds it",
)
LOAD_FAILED = (
    "The model did not load (damaged, a graph this service cannot serve, not enough memory): "
    "nothing changed, and a version that served before serves on",
    "the model digits_10:v2 did not load, so nothing changed (version v1 still serves): ...",
)
UNLOAD_NOT_FOUND = (
    "The model is not served",
    "there is no model 'digits'; this server serves 'binary_classifier_3' (GET /models lists them)",
)

TAG_PREDICT = "Service APIs"  # BentoML's name: its HTTP client looks for it
TAG_MODELS = "Models"
TAG_V2 = "Open Inference Protocol (KServe V2)"
TAG_PAGE = "Page"
OTHER_TAGS = [
    {
        "name": TAG_MODELS,
        "description": "The models served (`GET /models`), and loading, reloading and unloading "
        "them without a restart: the Open Inference Protocol's repository extension.",
    },
    {
        "name": TAG_V2,
        "description": "The Open Inference Protocol (KServe V2 REST), for KServe, Triton and "
        "MLServer clients; the binary tensor extension is not described here (see docs/api.md).",
    },
    {"name": TAG_PAGE, "description": "The page to draw or upload an image (`/ui`)."},
    {"name": "Infrastructure", "description": "Health, readiness and Prometheus metrics."},
]
# Labels named in a model's description before "... and N more".
NAMED_LABELS = 10


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


def correct_prediction_operations(
    predict: dict[str, Any], batch: dict[str, Any], spec: ModelSpec, route: str
) -> None:
    """BentoML's two operations (or copies of them), corrected in place for the model ``spec``
    answering at ``route``: their real statuses, the query, raw-body uploads and examples."""
    top_k = {
        "name": "top_k",
        "in": "query",
        "required": False,
        "description": "Multi-class models: how many ranked classes to answer (0: all); "
        "binary models ignore it",
        "schema": {"type": "integer", "minimum": 0},
    }
    sample = "digit.png" if spec.preprocess.is_digit else "image.jpg"
    curl = f"curl -F file=@{sample} http://HOST{route}"
    answer = example_answer(spec)
    predict["summary"] = "Classify one image"
    predict["description"] = (
        f"{inspect.cleandoc(predict.get('description', ''))}\n\n"
        f"```console\n$ {curl}\n{json.dumps(answer)}\n```\n\n"
        "Or send the raw image as the body, with its `Content-Type` (`image/png`, ...)."
    )
    raw_image = {"schema": {"type": "string", "format": "binary"}}
    for operation, errors in (
        (predict, prediction_errors(spec, 400, 404, 408, 413, 415, 422, 503)),
        (batch, prediction_errors(spec, 400, 404, 408, 415, 503)),
    ):
        operation["parameters"] = [top_k]
        ok = operation["responses"][str(HTTPStatus.OK.value)]
        operation["responses"] = {str(HTTPStatus.OK.value): ok, **errors}
        if operation is predict:
            for media in ("image/png", "image/jpeg"):
                operation["requestBody"]["content"][media] = raw_image
            ok["content"]["application/json"]["example"] = answer
    batch["summary"] = "Classify many images"
    batch["responses"]["413"] = error_response(*BATCH_TOO_MANY)
    batch["responses"] = dict(sorted(batch["responses"].items()))
    batch["description"] = inspect.cleandoc(batch.get("description", ""))
    bad_image = {"error": PREDICT_ERRORS[400][1], "status": 400}
    batch["responses"]["200"]["content"]["application/json"]["example"] = [answer, bad_image]


def label_list(labels: tuple[str, ...]) -> str:
    """The labels in Markdown: "`a`, `b` and `c`", or the first ten "and N more"."""
    shown = [f"`{label}`" for label in labels[:NAMED_LABELS]]
    if len(labels) > NAMED_LABELS:
        return f"{', '.join(shown)} and {len(labels) - NAMED_LABELS} more"
    if len(shown) < 2:
        return "".join(shown)
    return f"{', '.join(shown[:-1])} and {shown[-1]}"


def model_summary(served: Version) -> str:
    """What the model takes and what it answers, in its labels (Markdown, one paragraph)."""
    spec = served.spec
    post = spec.postprocess
    takes = "a handwritten digit" if spec.preprocess.is_digit else "an image"
    if post.is_binary:
        negative, positive = post.labels
        answers = (
            f"Binary: `label` is `{positive}` when `proba`, P({positive}), is {post.threshold:g} "
            f"or more, else `{negative}`."
        )
    elif post.is_multi_label:
        answers = (
            f"Multi-label, {post.classes} labels ({label_list(post.labels)}): `labels` holds "
            f"every label of probability {post.threshold:g} or more; `top_k` the best "
            f"{post.top_k}."
        )
    else:
        answers = (
            f"Multi-class, {post.classes} classes ({label_list(post.labels)}): `label` is the "
            f"most probable; `top_k` the best {post.top_k} (`?top_k=N` for more or fewer)."
        )
    return f"**{served.name}**, version `{served.version}`, classifies {takes}. {answers}"


def model_tag(served: Version) -> dict[str, str]:
    """A section of the Swagger page per model, with its own routes."""
    return {"name": f"Model {served.name}", "description": model_summary(served)}


def model_prediction_paths(
    bentoml_predict: dict[str, Any], bentoml_batch: dict[str, Any], served: Version
) -> dict[str, Any]:
    """POST /models/{name}/predict and /predict_batch of one model, from BentoML's operations
    (which describe the default model's /predict and /predict_batch: the same request)."""
    routes = routes_of(served.name, served.version, is_default=False)
    predict, batch = copy.deepcopy(bentoml_predict), copy.deepcopy(bentoml_batch)
    predict["description"] = model_summary(served)
    batch["description"] = (
        f"Many images (the field `file`, repeated), one answer per image, in order: what "
        f'`{routes["predict"]}` answers, or `{{"error": ..., "status": 4xx}}` for an image '
        "that cannot be read; the other images are still classified."
    )
    correct_prediction_operations(predict, batch, served.spec, routes["predict"])
    paths = {}
    for kind, operation in (("predict", predict), ("predict_batch", batch)):
        operation.pop("x-bentoml-name", None)  # BentoML's name of its own API, which this is not
        operation["operationId"] = f"models__{served.name}__{kind}"
        operation["tags"] = [model_tag(served)["name"]]
        paths[routes[kind]] = {"post": operation}
    return paths


def path_parameter(
    name: str, description: str, example: str, choices: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "example": example}
    if choices:  # Swagger's Try it out offers them in a list
        schema["enum"] = choices
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def v2_get(summary: str, example: Any, errors: dict[int, tuple[str, str]]) -> dict[str, Any]:
    responses = {"200": json_response("OK", example, {"type": "object"})}
    responses.update({str(status): error_response(*error) for status, error in errors.items()})
    return {"get": {"tags": [TAG_V2], "summary": summary, "responses": responses}}


def open_inference_paths(example: Version | None, names: list[str]) -> dict[str, Any]:
    """GET /v2 ... and POST .../infer (dlops/api/v2/routes.py), as far as JSON describes them; the
    model routes' examples are ``example``'s, their ``name`` one of ``names``."""
    paths: dict[str, Any] = {
        "/v2": v2_get(
            "Server metadata", {"name": "dlops", "extensions": ["binary_tensor_data"]}, {}
        ),
        "/v2/health/live": v2_get("Live", {"live": True}, {}),
        "/v2/health/ready": v2_get("Ready", {"ready": True}, {503: NOT_READY}),
    }
    if example is not None:  # else no model is served: every model route answers 404
        paths.update(v2_model_paths(example, names))
    return paths


def v2_model_paths(example: Version, names: list[str]) -> dict[str, Any]:
    spec, name, version = example.spec, example.name, example.version
    model_name = path_parameter("name", "A served model's name (GET /models)", name, names)
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
    paths: dict[str, Any] = {}
    for prefix, parameters in (
        ("/v2/models/{name}", [model_name]),
        ("/v2/models/{name}/versions/{version}", [model_name, model_version]),
    ):
        metadata = v2_get("Model metadata", {"name": name, "versions": [version]}, {404: NOT_FOUND})
        ready = v2_get(
            "Model ready", {"name": name, "ready": True}, {404: NOT_FOUND, 503: NOT_READY}
        )
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


def models_paths(models: dict[str, Any]) -> dict[str, Any]:
    """GET /models, whose answer ``models`` is, and the repository extension
    (dlops/api/v2/repository.py)."""
    listing = models["models"]
    example = listing[0]["name"] if listing else models["default"]
    version = listing[0]["version"] if listing else "<version>"
    switch = (
        "On in this server."
        if config.API_KEY is not None or config.REPOSITORY_API
        else "Off in this server (403): start it with `API_KEY` set (callers then send the key) "
        "or, on a private network only, `DLOPS_REPOSITORY_API=1`."
    )
    any_object = {"type": "object"}

    def optional_body(
        description: str, schema: dict[str, Any], sent: dict[str, Any]
    ) -> dict[str, Any]:
        content = {"application/json": {"schema": schema, "example": sent}}
        return {"required": False, "description": description, "content": content}

    def repository_call(
        summary: str,
        description: str,
        request: dict[str, Any],
        answer: Any,
        errors: dict[int, tuple[str, str]],
    ) -> dict[str, Any]:
        statuses = {status: REPOSITORY_ERRORS[status] for status in (400, 403, 408, 413)}
        responses = {"200": json_response("Done", answer, any_object)}
        for status, error in sorted((statuses | errors).items()):
            responses[str(status)] = error_response(*error)
        operation = {
            "tags": [TAG_MODELS],
            "summary": summary,
            "description": f"{description}\n\n{switch}",
            "requestBody": request,
            "responses": responses,
        }
        return {"post": operation}

    name = path_parameter("name", f"A model's name in the BentoML store ({NAME_RULE})", example)
    load = repository_call(
        "Load or reload a model",
        "Loads the model (its latest version, or `parameters.version`) from the BentoML model "
        "store, warms it up and serves it at `/models/{name}/predict` and `/v2/models/{name}`. "
        "A model already served keeps serving until the new version is ready; a load that fails "
        "changes nothing. Answers once every worker serves it.",
        optional_body(
            "The version to load; none (or no body) for the latest",
            {
                "type": "object",
                "properties": {
                    "parameters": {
                        "type": "object",
                        "properties": {"version": {"type": "string"}},
                        "additionalProperties": False,
                    }
                },
            },
            {"parameters": {"version": version}},
        ),
        {"name": example, "version": version, "state": "READY"},
        {
            404: LOAD_NOT_FOUND,
            409: REPOSITORY_ERRORS[409],
            422: LOAD_FAILED,
            504: REPOSITORY_ERRORS[504],
        },
    )
    unload = repository_call(
        "Unload a model",
        "Stops serving the model: its routes answer 404 until it is loaded again. Answers once "
        "every worker has unloaded it.",
        optional_body("Nothing is needed", {"type": "object"}, {}),
        {"name": example, "state": "UNAVAILABLE", "reason": "unloaded"},
        {404: UNLOAD_NOT_FOUND, 409: REPOSITORY_ERRORS[409], 504: REPOSITORY_ERRORS[504]},
    )
    for item in (load, unload):
        item["post"]["parameters"] = [name]
    index = repository_call(
        "Every model and its state",
        "Each model of the BentoML store and each version served or loading, with its state "
        "(`READY`, `LOADING` or `UNAVAILABLE`) and why it is not ready.",
        optional_body(
            "`ready: true` lists only the models ready to answer",
            {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            {"ready": False},
        ),
        [
            {"name": entry["name"], "version": entry["version"], "state": "READY", "reason": ""}
            for entry in listing
        ],
        {},
    )
    models = {
        "tags": [TAG_MODELS],
        "summary": "The models served",
        "description": "Each model served, the default first (it also answers `/predict`): its "
        "version, state, task, labels, input, memory and routes; and the memory of the worker "
        "that answered.",
        "responses": {
            "200": json_response(
                "The default model's name, every model served, the worker's memory",
                models,
                any_object,
            )
        },
    }
    return {
        "/models": {"get": models},
        "/v2/repository/index": index,
        "/v2/repository/models/{name}/load": load,
        "/v2/repository/models/{name}/unload": unload,
    }


def page_paths() -> dict[str, Any]:
    """The /ui page (dlops/api/ui.py): described so that schema-driven clients and fuzzers see
    it."""
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
                "summary": "The default model alone, in the shape the page once read",
                "responses": {
                    "200": json_response(
                        "The model's name, version, input kind and labels",
                        {"name": "binary_classifier_3", "input": "digit", "binary": True},
                        {"type": "object"},
                    ),
                    "404": error_response(*PREDICT_ERRORS[404]),
                },
            }
        },
        "/ui/models.json": {
            "get": {
                "tags": [TAG_PAGE],
                "summary": "The models the page offers: GET /models, open like the page",
                "responses": {
                    "200": json_response(
                        "GET /models' answer, each model with its `threshold` and `top_k`",
                        {"default": "binary_classifier_3", "models": [{"name": "..."}]},
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


def served_versions(repository: Repository) -> list[Version]:
    """The version of every model served, the default first (one unloaded meanwhile is left
    out)."""
    versions = []
    for name in repository.names:
        try:
            versions.append(repository.current(name))
        except ClientError:
            continue
    return sorted(versions, key=lambda served: served.name != repository.default_name)


def served_line(versions: list[Version], default_name: str) -> str:
    """Which models the server serves, and which answers /predict (Markdown)."""
    if not versions:
        return "Serves no model now: load one with `POST /v2/repository/models/{name}/load`."
    if len(versions) == 1 and versions[0].name == default_name:
        return f"Serves the model **{default_name}**, version `{versions[0].version}`."
    listed = ", ".join(f"**{served.name}** (version `{served.version}`)" for served in versions)
    if versions[0].name == default_name:
        default = f"the default, **{default_name}**, also answers `/predict` and `/predict_batch`"
    else:
        default = f"the default, **{default_name}**, is unloaded: `/predict` answers 404"
    return (
        f"Serves {len(versions)} models: {listed}; each at `/models/{{name}}/predict`, and "
        f"{default}."
    )


def openapi_document(
    service: Any, repository: Repository, versions: list[Version]
) -> dict[str, Any]:
    """The corrected document for ``service`` (a bentoml.Service) serving ``versions``, the
    models of ``repository`` (``served_versions``)."""
    # Through JSON: a copy of BentoML's cached parts, with its integer status keys as strings.
    document = json.loads(json.dumps(bentoml_openapi_document(service)))
    default_name = repository.default_name
    default = versions[0] if versions and versions[0].name == default_name else None
    paths = document["paths"]
    predict, batch = paths["/predict"]["post"], paths["/predict_batch"]["post"]
    for served in versions:
        paths.update(model_prediction_paths(predict, batch, served))
    if default is not None:
        correct_prediction_operations(predict, batch, default.spec, "/predict")
    else:  # unloaded through /v2/repository: /predict answers 404 until it is loaded again
        del paths["/predict"], paths["/predict_batch"]
    paths["/readyz"]["get"]["responses"]["503"] = error_response(
        "The model is not loaded and warmed up yet", "Service Unavailable"
    )
    names = [served.name for served in versions]
    paths.update(open_inference_paths(versions[0] if versions else None, names))
    listed = {
        "default": default_name,
        "models": repository.listing(),
        "worker": repository.worker.describe(),
    }
    paths.update(models_paths(listed))
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
    predict_tag = {
        "name": TAG_PREDICT,
        "description": f"Classify images with the default model, **{default_name}**: "
        "`POST /predict`, `/predict_batch`.",
    }
    document["tags"] = [predict_tag, *(model_tag(served) for served in versions), *OTHER_TAGS]
    document["info"] = {
        "title": f"dlops: {', '.join(names) or 'no model'}",
        "version": __version__,
        "description": (
            f"{served_line(versions, default_name)} Served by dlops {__version__}.\n\n"
            f"{document['info'].get('description', '')}\n\n"
            'Every error is `{"error": "..."}`. Any route answers 404 for a path it does '
            "not have, 405 for a method it does not take (e.g. `GET /predict`) and 431 for a "
            f"request line and headers over {config.MAX_HEAD_BYTES:,} bytes or more than "
            f"{config.MAX_HEADERS} headers."
        ),
        "contact": {"name": "dlops"},
        "x-models": [
            {"name": served.name, "version": served.version, "default": served is default}
            for served in versions
        ],
    }
    if default is not None:
        document["info"]["x-model"] = {"name": default.name, "version": default.version}
    return document
