"""Every setting of the service, read from the environment in one place.

Each variable has a default that suits the reference model on a small machine; a malformed value
stops start-up with a message naming the variable, instead of surfacing later as a 500.
"""

from __future__ import annotations

import os

MODEL_FILE_NAME = "model.onnx"  # the ONNX file's name inside the BentoML model store entry
DEFAULT_MODEL_NAME = "binary_classifier_3"


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


# Which model the service loads from the BentoML model store (`python import_model.py --name`).
MODEL_NAME = os.environ.get("DLOPS_MODEL_NAME", DEFAULT_MODEL_NAME).strip() or DEFAULT_MODEL_NAME
MODEL_TAG = f"{MODEL_NAME}:latest"

# Uploads larger than this are refused with 413 before the rest of the body is read.
MAX_BODY_BYTES = _positive_int("DLOPS_MAX_BODY_BYTES", 10 * 1024 * 1024)
# /predict_batch takes at most this many images per request.
MAX_BATCH_IMAGES = _positive_int("DLOPS_MAX_BATCH_IMAGES", 64)
# Decoded images with more pixels than this are refused with 413 (decompression bombs).
MAX_IMAGE_PIXELS = _positive_int("DLOPS_MAX_IMAGE_PIXELS", 40_000_000)
# Heroku's router gives up after 30 s; answering (with an error) before that keeps the
# client's error ours and readable instead of the router's H12 page. On the prediction routes it
# bounds the upload (408 after it); BentoML applies it to its own routes.
REQUEST_TIMEOUT_SECONDS = _positive_int("DLOPS_REQUEST_TIMEOUT_SECONDS", 20)
# One worker per process tree: the model takes ~20 µs an image, so a second worker mostly adds
# memory (~150 MiB RSS each, measured by `make bench`) on a small dyno; 2 workers gave +7-9 %
# throughput on 2 cores. Raise it on machines with more cores.
WORKERS = _positive_int("DLOPS_WORKERS", 1)
# onnxruntime's intra-op threads per worker. One suits the digit models (a pool only adds
# hand-off jitter to microseconds of work) and several workers on several cores; a large model
# served by one worker on a many-core machine may gain from more (README, Performance).
INTRA_OP_THREADS = _positive_int("DLOPS_INTRA_OP_THREADS", 1)
# On SIGTERM, the longest a worker keeps accepting the connections already queued before it
# lets requests in flight finish and exits; Heroku sends SIGKILL 30 s after SIGTERM.
DRAIN_SECONDS = 5
# How long a request that arrives while the model is still loading waits for it before a 503.
MODEL_WAIT_SECONDS = min(10, REQUEST_TIMEOUT_SECONDS / 2)
# An access log line per request (BentoML's for its routes, ours for the direct routes). Off by
# default: on BentoML's stack it cost ~12 % of throughput, and Heroku's router already logs
# every request with its status and service time.
ACCESS_LOG = os.environ.get("DLOPS_ACCESS_LOG", "").strip().lower() in ("1", "true", "yes", "on")
# When set, every request but health, readiness, metrics, the API docs and the /ui page needs
# this key ('Authorization: Bearer <key>' or 'X-API-Key: <key>'); unset or empty: no key needed.
# The name is the platform convention (`heroku config:set API_KEY=...`), without our prefix.
API_KEY = os.environ.get("API_KEY", "").strip() or None
# Our log lines go through BentoML's server logging (its format, its handlers), which is
# configured for the "bentoml" logger tree only.
LOGGER_NAME = "bentoml.dlops"
