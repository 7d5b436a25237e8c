"""Every setting of the service, read from the environment in one place.

Each variable has a default that suits the reference model on a small machine; a malformed value
stops start-up with a message naming the variable, instead of surfacing later as a 500.
"""

from __future__ import annotations

import os
import re

MODEL_FILE_NAME = "model.onnx"  # the ONNX file's name inside the BentoML model store entry
DEFAULT_MODEL_NAME = "binary_classifier_3"


ON_WORDS = ("1", "true", "yes", "on")
OFF_WORDS = ("0", "false", "no", "off")


def _switched_on(name: str) -> bool:
    """An off-by-default switch: 1, true, yes or on turn it on."""
    return os.environ.get(name, "").strip().lower() in ON_WORDS


def _switched_off(name: str) -> bool:
    """An on-by-default switch: 0, false, no or off turn it off; 1, true, yes or on (or unset)
    leave it on; anything else stops the start."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in OFF_WORDS:
        return True
    if not raw or raw in ON_WORDS:
        return False
    raise SystemExit(f"{name}={raw!r} is neither on nor off; unset it, or give 0 to turn it off")


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(
            f"{name}={raw!r} is not a whole number; unset it or give e.g. {default}"
        ) from None
    if value <= 0:
        raise SystemExit(f"{name}={raw!r} must be greater than 0 (default {default})")
    return value


# A model's name and version as the BentoML model store spells them: never a path.
STORE_TAG_PART = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,61}[a-z0-9])?")


def store_tag(text: str, variable: str) -> tuple[str, str | None]:
    """``name`` or ``name:version`` -> (name, version or None for the latest)."""
    name, _, version = text.strip().lower().partition(":")
    for part in (name, version) if version else (name,):
        if not STORE_TAG_PART.fullmatch(part):
            raise SystemExit(
                f"{variable}: {text.strip()!r} is not a model of the BentoML store: give name or "
                "name:version (lowercase letters, digits, '_', '-' and '.', at most 63 each)"
            )
    return name, (version if version not in ("", "latest") else None)


def _served_models() -> list[tuple[str, str | None]]:
    """DLOPS_MODELS=name[:version],... or else DLOPS_MODEL_NAME (one model), in order."""
    listed = os.environ.get("DLOPS_MODELS", "").strip()
    if not listed:
        one = os.environ.get("DLOPS_MODEL_NAME", "").strip() or DEFAULT_MODEL_NAME
        return [store_tag(one, "DLOPS_MODEL_NAME")]
    models = [store_tag(item, "DLOPS_MODELS") for item in listed.split(",") if item.strip()]
    if not models:
        raise SystemExit(f"DLOPS_MODELS={listed!r} names no model: give name[:version],...")
    one = os.environ.get("DLOPS_MODEL_NAME", "").strip()
    if one and store_tag(one, "DLOPS_MODEL_NAME")[0] != models[0][0]:
        # An image sets DLOPS_MODELS to what it packs: the one-model setting would be ignored.
        raise SystemExit(
            f"DLOPS_MODEL_NAME={one!r} is ignored when DLOPS_MODELS is set (to {listed!r}; an "
            "image sets it to the models it packs): name the models in DLOPS_MODELS instead"
        )
    names = [name for name, _ in models]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SystemExit(f"DLOPS_MODELS names {', '.join(repeated)} more than once")
    return models


# The models the service loads from the BentoML model store (`python import_model.py --name`),
# in order: the first answers /predict and /predict_batch, every one /models/{name}/... and /v2.
MODELS = _served_models()
MODEL_TAGS = [f"{name}:{version or 'latest'}" for name, version in MODELS]
# The repository extension (POST /v2/repository/...: load, reload and unload models without a
# restart) changes what the server serves: with API_KEY set it needs the key; without one it is
# off unless this is set to 1.
REPOSITORY_API = _switched_on("DLOPS_REPOSITORY_API")
# How long a repository call waits for every worker to converge on the models it asked for.
CONVERGE_SECONDS = 120

# Uploads larger than this are refused with 413 before the rest of the body is read.
MAX_BODY_BYTES = _positive_int("DLOPS_MAX_BODY_BYTES", 10 * 1024 * 1024)
# /predict_batch takes at most this many images per request.
MAX_BATCH_IMAGES = _positive_int("DLOPS_MAX_BATCH_IMAGES", 64)
# Images that declare more pixels than this are refused with 413 before decoding (a 48 MP
# phone photo's JPEG passes: it is decoded at 1/8 scale).
MAX_IMAGE_PIXELS = _positive_int("DLOPS_MAX_IMAGE_PIXELS", 50_000_000)
# The pixels all the images of one request may declare together (413 for the images beyond).
MAX_REQUEST_PIXELS = _positive_int("DLOPS_MAX_REQUEST_PIXELS", 100_000_000)
# The resident memory (MiB) one worker may reach. Heavy work (decoding large images, parsing
# large tensors) shares what the loaded model leaves of it, and waits for room; work that alone
# needs more is refused with 413. The default keeps a one-worker tree (the arbiter takes ~100
# MiB) inside a 512 MB Heroku dyno.
MAX_WORKER_MEMORY_MIB = _positive_int("DLOPS_MAX_WORKER_MEMORY", 384)
# Request bodies held at once by a worker, counted as they arrive: two uploads of the largest
# size. Each is held up to three times over while it is read and split (chunks, joined, parts).
BODY_ALLOWANCE_BYTES = 2 * MAX_BODY_BYTES
BODY_MEMORY_BYTES = 3 * BODY_ALLOWANCE_BYTES
# onnxruntime's execution providers, in order of preference (DLOPS_PROVIDERS=openvino,cpu): each
# node of the graph runs on the first listed that can run it. Every one listed must load: one that
# does not stops the start with a line saying so, never a silent fallback to the CPU, which
# Triton's and MLflow's users report as a bug.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


def _providers() -> tuple[str, ...]:
    listed = os.environ.get("DLOPS_PROVIDERS", "").strip()
    if not listed:
        return (PROVIDER_NAMES["cpu"],)
    chosen = []
    for item in filter(None, (part.strip() for part in listed.split(","))):
        full = PROVIDER_NAMES.get(item.lower())
        full = full or next((n for n in PROVIDER_NAMES.values() if n.lower() == item.lower()), None)
        if full is None:
            raise SystemExit(
                f"DLOPS_PROVIDERS: {item!r} is not an execution provider dlops knows; give some "
                f"of {', '.join(PROVIDER_NAMES)}, in order of preference (e.g. openvino,cpu)"
            )
        chosen.append(full)
    if not chosen:
        raise SystemExit(f"DLOPS_PROVIDERS={listed!r} names no provider; e.g. cpu or openvino,cpu")
    return tuple(dict.fromkeys(chosen))


PROVIDERS = _providers()
# One worker per process tree: the model takes ~20 µs an image, so a second worker mostly adds
# memory (~150 MiB RSS each, measured by `make bench`) on a small dyno; 2 workers gave +7-9 %
# throughput on 2 cores. Raise it on machines with more cores.
WORKERS = _positive_int("DLOPS_WORKERS", 1)
# Threads per worker for work that does not run on the event loop (decoding large images,
# running a large model): the worker's share of the cores. More would have the workers' images
# share the cores by time slices, which widens the tail (docs/performance.md). Abandoned work keeps
# its thread until it stops, so these also bound the CPU that timed-out requests can still use.
WORK_THREADS = _positive_int("DLOPS_WORK_THREADS", max(1, len(os.sched_getaffinity(0)) // WORKERS))
# Heroku's router gives up after 30 s; answering (with an error) before that keeps the
# client's error ours and readable instead of the router's H12 page. Every route answers within
# it: 408 if the body is still arriving, 503 if the server was too busy (dlops/http/deadline.py).
REQUEST_TIMEOUT_SECONDS = _positive_int("DLOPS_REQUEST_TIMEOUT_SECONDS", 20)
# onnxruntime's intra-op threads per worker. One suits the digit models (a pool only adds
# hand-off jitter to microseconds of work) and several workers on several cores; a large model
# served by one worker on a many-core machine may gain from more (docs/performance.md).
INTRA_OP_THREADS = _positive_int("DLOPS_INTRA_OP_THREADS", 1)
# On SIGTERM, the longest a worker keeps accepting the connections already queued before it
# lets requests in flight finish and exits; Heroku sends SIGKILL 30 s after SIGTERM.
DRAIN_SECONDS = 5
# How long a request that arrives while the model is still loading waits for it before a 503.
MODEL_WAIT_SECONDS = min(10, REQUEST_TIMEOUT_SECONDS / 2)
# An access log line per request (BentoML's for its routes, ours for the direct routes). Off by
# default: on BentoML's stack it cost ~12 % of throughput, and Heroku's router already logs
# every request with its status and service time.
ACCESS_LOG = _switched_on("DLOPS_ACCESS_LOG")
# When set, every request but health, readiness, metrics, the API docs and the /ui page needs
# this key ('Authorization: Bearer <key>' or 'X-API-Key: <key>'); unset or empty: no key needed.
# The name is the platform convention (`heroku config:set API_KEY=...`), without our prefix.
API_KEY = os.environ.get("API_KEY", "").strip() or None
# Our log lines go through BentoML's server logging (its format, its handlers), which is
# configured for the "bentoml" logger tree only.
LOGGER_NAME = "bentoml.dlops"
# Hand memory freed by large work back to the system once the worker holds more than it did at rest
# by a margin (dlops/pipeline/core.py, dlops/pipeline/memory.py); glibc would keep it in its arenas.
# 0 keeps the allocator's defaults, to measure the difference (`python -m bench.hostile
# --allocator-defaults`).
RETURN_MEMORY = not _switched_off("DLOPS_RETURN_MEMORY")
# Small images that arrive together, answered on the event loop, share one model call
# (dlops/pipeline/turn_batch.py); 0: every request keeps its own, to measure the difference.
ADAPTIVE_BATCHING = not _switched_off("DLOPS_ADAPTIVE_BATCHING")
# HTTP limits per worker (dlops/http/guard.py): request line and headers, header count, the time
# a connection may take to send a request's head (or sit idle), and open connections.
MAX_HEAD_BYTES = _positive_int("DLOPS_MAX_HEADER_BYTES", 32 * 1024)
MAX_HEADERS = _positive_int("DLOPS_MAX_HEADERS", 100)
HEAD_TIMEOUT_SECONDS = _positive_int("DLOPS_HEADER_TIMEOUT_SECONDS", 10)
MAX_CONNECTIONS = _positive_int("DLOPS_MAX_CONNECTIONS", 256)
