"""The Open Inference Protocol's repository extension, as Triton and tritonclient speak it, and
the list of the models served.

    POST /v2/repository/index                   {"ready": bool}: every model and its state
    POST /v2/repository/models/{name}/load      load, or reload, from the BentoML model store:
                                                its latest version, or "parameters": {"version"}
    POST /v2/repository/models/{name}/unload    stop serving it
    GET  /models                                the models served: version, state, classes,
                                                input, memory and routes; and the memory of
                                                the worker that answered

A reload loads and warms the new version beside the old one, which serves until the new one is
ready; one that fails leaves the old one serving. With several workers, the call answers once
every worker serves the change (dlops/serving/models.py). These calls change what the server serves:
with API_KEY set they need the key (dlops/http/auth.py), and without one they are off unless
DLOPS_REPOSITORY_API=1.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import bentoml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dlops import config
from dlops.http.errors import printable
from dlops.http.upload import read_body
from dlops.pipeline.errors import ClientError
from dlops.pipeline.repository import Repository
from dlops.serving.models import InStep

# A repository request is a small JSON object.
MAX_REQUEST_BYTES = 64 * 1024
OFF = (
    "the repository extension is off: it changes which models this server serves. Enable it "
    "with API_KEY=<key> (callers then send 'Authorization: Bearer <key>') or, on a private "
    "network only, DLOPS_REPOSITORY_API=1"
)
NAME_RULE = "lowercase letters, digits, '_', '-' and '.', at most 63"


def in_step() -> InStep:
    """This worker's models, after the guard: the extension is on."""
    if config.API_KEY is None and not config.REPOSITORY_API:
        raise ClientError(OFF, HTTPStatus.FORBIDDEN, kind="repository_off")
    return bentoml.get_current_service().in_step


def model_name(request: Request) -> str:
    name = request.path_params["name"]
    if not config.STORE_TAG_PART.fullmatch(name):
        raise ClientError(f"{printable(name)!r} is not a model name: names are {NAME_RULE}")
    return name


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {}."""
    body = await read_body(request, MAX_REQUEST_BYTES)
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ClientError('the body is not a JSON object; send e.g. {"parameters": {}} or none')
    return parsed


def parameters(request: dict[str, Any]) -> dict[str, Any]:
    given = request.get("parameters", {})
    if not isinstance(given, dict):
        raise ClientError('"parameters" is not a JSON object')
    return given


def requested_version(given: dict[str, Any]) -> str | None:
    """parameters.version, checked as a store version; None for the latest."""
    unsupported = sorted(set(given) - {"version"})
    if unsupported:
        raise ClientError(
            f"parameters {unsupported} are not supported: each model's configuration is the one "
            'imported with it into the BentoML store; send {"parameters": {"version": "..."}} '
            "to choose a version, or nothing for the latest"
        )
    version = given.get("version")
    if version is None:
        return None
    if not isinstance(version, str) or not config.STORE_TAG_PART.fullmatch(version):
        raise ClientError(f"parameters.version {version!r} is not a store version: {NAME_RULE}")
    return version


def followed_everywhere(failures: dict[str, str]) -> None:
    if failures:
        listed = "; ".join(f"{where}: {why}" for where, why in failures.items())
        raise ClientError(
            f"this worker serves the change, but not every worker could follow ({listed}); "
            "they serve what they served before",
            HTTPStatus.CONFLICT,
            kind="repository_diverged",
        )


async def index(request: Request) -> Response:
    models = in_step()
    ready = ready_flag(await json_object(request))
    await asyncio.to_thread(models.catch_up)
    return JSONResponse(models.repository.index(ready_only=ready))


def ready_flag(request: dict[str, Any]) -> bool:
    ready = request.get("ready", False)
    if not isinstance(ready, bool):
        raise ClientError(f'"ready" is {ready!r}; expected true or false')
    return ready


async def load(request: Request) -> Response:
    models = in_step()
    name = model_name(request)
    version = requested_version(parameters(await json_object(request)))

    def change(repository: Repository) -> dict[str, str]:
        served = repository.load(name, version)
        return {"name": served.name, "version": served.version, "state": "READY"}

    answer, failures = await asyncio.to_thread(models.change, change)
    followed_everywhere(failures)
    return JSONResponse(answer)


async def unload(request: Request) -> Response:
    models = in_step()
    name = model_name(request)
    parameters(await json_object(request))  # unload_dependents: no model depends on another

    def change(repository: Repository) -> dict[str, str]:
        repository.unload(name)
        return {"name": name, "state": "UNAVAILABLE", "reason": "unloaded"}

    answer, failures = await asyncio.to_thread(models.change, change)
    followed_everywhere(failures)
    return JSONResponse(answer)


async def list_models(request: Request) -> Response:
    repository: Repository = bentoml.get_current_service().repository
    return JSONResponse(
        {
            "default": repository.default_name,
            "models": repository.listing(),
            "worker": repository.worker.describe(),
        }
    )


routes = [
    Route("/v2/repository/index", index, methods=["POST"]),
    Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
    Route("/models", list_models),
]
