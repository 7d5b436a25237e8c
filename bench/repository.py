"""Several models in one server: `python -m bench.repository [--quick]`.

One `bentoml serve` with DLOPS_MODELS=binary_classifier_3,digits_10,orientation against servers
of one model each, all in one run, from throwaway BentoML homes:

1. memory: the serving tree's RSS (arbiter + worker) with each model alone and with the three,
   and each model's `memory_mib.resident` as GET /models reports it;
2. the default model's speed (hey, 16 clients, POST /predict with a digit) with one model loaded
   and with three, the two servers measured in alternating rounds (medians, ratios);
3. the wall time of a reload (POST /v2/repository/models/{name}/load of the default model's
   other version), idle and under load;
4. hey on /predict while 5 reloads alternate between the two versions: every status hey saw,
   and a probe that checks each answer after a swap comes from the version just loaded (the
   two versions differ only in their threshold, which flips the digit's label);
5. the memory bound of a 512 MiB dyno serving the three models with one worker: the peak and
   final tree RSS under bench/hostile.py's cases, a short bench/soak.py soak and
   /models/orientation/predict_batch of 64 photo-like JPEGs of ~150 KiB, each on a fresh
   server.

Phases 1-4 pin the servers and hey to disjoint cores (bench/placement.py); phase 5 runs unpinned,
as bench/hostile.py and bench/soak.py do. Writes bench/results/repository.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import re
import shlex
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import hostile
from bench import soak as soak_bench
from bench.load import (
    BOUNDARY,
    CONTENT_TYPE,
    DIGIT,
    REQUEST_TIMEOUT_SECONDS,
    ensure_hey,
    hey_argv,
    multipart_body,
    run_hey,
)
from bench.machine import machine_at_end, machine_info
from bench.orientation import model_file
from bench.placement import Placement, pinned_to, place
from bench.rounds import grouped, paired, rotated, run_row, spread
from bench.servers import (
    PEAK_SAMPLE_SECONDS,
    ROOT,
    PeakRss,
    Server,
    dlops_server,
    import_model,
    running,
    throwaway_home,
)
from bench.study import (
    RESULTS,
    command_line,
    fmt,
    log,
    run_header,
    run_study,
    write_results,
)
from dlops.model.spec import SPEC_FILE_NAME, ModelSpec
from dlops.pipeline.postprocess import Postprocessor

STEM = "repository"
DEFAULT_MODEL = "binary_classifier_3"
DIGITS_MODEL = "digits_10"
ORIENTATION = "orientation"
# Version B of the default model: a threshold above the digit's P(3), so that A (threshold 0.5)
# answers "3" and B "no 3" and every answer says which version gave it (checked as the run starts).
THRESHOLD_B = "0.995"
CONCURRENCY = 16
# (full, --quick)
DEFAULTS = {
    "rounds": (5, 2),
    "requests": (5000, 1000),
    "warmup": (1000, 300),
    "idle_swaps": (10, 4),
    "batches": (5, 1),
}
LOAD_SWAPS = 5
SWAP_GAP_SECONDS = 1.0  # between reloads under load: time for the probe to see each version
LOAD_LEAD_SECONDS = 1.0  # hey's connections busy before the first reload, and after the last
HEY_MAX_DURATION = "600s"  # the swaps' hey is interrupted once they are done
MEMORY_SAMPLES = 5
WARM_DIGITS, WARM_PHOTOS = 50, 5  # answers per model before its memory is read
SETTLE_SECONDS = 2.0  # before a "final" RSS: the allocator's hand-back and the GC have run
DYNO_MIB = 512
BATCH_IMAGES = 64
# A 0.8 MP photo at ~150 KiB; 64 of them stay under the 10 MiB body limit.
PHOTO_SIZE = (1024, 768)
PHOTO_BYTES = 150 * 1024
PHOTO_QUALITY = 85


# -- the model store ---------------------------------------------------------------------------


def import_version(home: Path, model: Path, name: str, flags: list[str]) -> tuple[str, str]:
    """`python import_model.py MODEL --name NAME FLAGS` into ``home``: the version, read from
    the importer's last line ("imported: NAME:VERSION"), and the command as typed."""
    shown = model.relative_to(ROOT) if model.is_relative_to(ROOT) else model
    entry = import_model(home, model, name, flags=flags)
    return entry.name, shlex.join(["python", "import_model.py", str(shown), "--name", name, *flags])


@dataclass(frozen=True)
class Store:
    """The model store every server copies, and what the run sends."""

    version_a: str  # the default model as imported
    version_b: str  # the same file, imported with --threshold THRESHOLD_B
    commands: list[str]
    digit: bytes
    photos: list[bytes]

    @property
    def versions(self) -> tuple[str, str]:
        return self.version_a, self.version_b

    @property
    def models(self) -> str:
        """DLOPS_MODELS of the three-model servers: the default model at version A."""
        return f"{DEFAULT_MODEL}:{self.version_a},{DIGITS_MODEL},{ORIENTATION}"


def build_store(home: Path, photos: list[bytes]) -> Store:
    binary = ROOT / "models" / "binary_classifier_3.onnx"
    imports = [
        (binary, DEFAULT_MODEL, []),
        (binary, DEFAULT_MODEL, ["--threshold", THRESHOLD_B]),
        (ROOT / "models" / "digits_10.onnx", DIGITS_MODEL, []),
        (model_file(), ORIENTATION, []),
    ]
    done = [import_version(home, *args) for args in imports]
    commands = [command for _, command in done]
    return Store(done[0][0], done[1][0], commands, DIGIT.read_bytes(), photos)


def label_of(home: Path, version: str, proba: float) -> str:
    """What ``version`` of the default model answers for P(positive) = ``proba``: its stored
    spec, the service's own rule."""
    spec_path = home / "models" / DEFAULT_MODEL / version / SPEC_FILE_NAME
    spec = ModelSpec.from_json(json.loads(spec_path.read_text()))
    return Postprocessor(spec.postprocess).binary_label(proba)


# -- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the JSON answer, or the text of one that is not JSON
    seconds: float


def call(
    url: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 120,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A GET (no body) or POST; an error status is a Reply too."""
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        request.add_header("Content-Type", content_type)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    seconds = time.perf_counter() - started
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw[:200].decode("utf-8", "replace")
    return Reply(status, parsed, seconds)


def predict(url: str, body: bytes) -> Reply:
    return call(url + "/predict", body, CONTENT_TYPE, REQUEST_TIMEOUT_SECONDS)


def multipart_files(files: list[bytes], filename: str, part_type: str) -> bytes:
    """One multipart body with every file in the field ``file`` (`curl -F file=@a -F file=@b`)."""
    closing = f"--{BOUNDARY}--\r\n".encode()
    parts = [
        multipart_body(file, filename=filename.format(index), part_type=part_type)[: -len(closing)]
        for index, file in enumerate(files)
    ]
    return b"".join(parts) + closing


# -- photo-like JPEGs --------------------------------------------------------------------------


def photo_jpeg(seed: int, noise: float, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """Smooth colour gradients (a photo's light and shade) under Gaussian sensor-like noise,
    as a JPEG: the noise's strength decides how large the file is."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        across, down, phase = rng.uniform(0.5, 3.0, 3)
        wave = np.sin(across * np.pi * x / width + phase) * np.cos(down * np.pi * y / height)
        pixels[..., channel] = 128 + 80 * wave
    pixels += noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        out, "JPEG", quality=PHOTO_QUALITY
    )
    return out.getvalue()


def noise_for(target_bytes: int, size: tuple[int, int] = PHOTO_SIZE, steps: int = 10) -> float:
    """The noise strength whose photo (seed 0) is ``target_bytes`` long, by bisection: the size
    grows with the noise."""
    low, high = 0.0, 64.0
    for _ in range(steps):
        middle = (low + high) / 2
        if len(photo_jpeg(0, middle, size)) < target_bytes:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def photo_batch(count: int, target_bytes: int = PHOTO_BYTES) -> tuple[list[bytes], float]:
    noise = noise_for(target_bytes)
    return [photo_jpeg(seed, noise) for seed in range(count)], noise


# -- memory ------------------------------------------------------------------------------------


def accounted(server: Server, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """GET /models once the worker has counted its models in its budget: dlops/serving/models.py
    does so within a quarter second of readiness, and a probe sent before would find a larger
    budget."""
    deadline = time.monotonic() + 10
    while True:
        listing = call(server.url + "/models", headers=headers).body
        if listing["worker"]["models_mib"] > 0 or time.monotonic() > deadline:
            return listing
        time.sleep(0.05)


def peak_of(peaks: dict[str, Any], role: str) -> float:
    return max(
        (p["peak_rss_mib"] for p in peaks["peak_by_process"] if p["role"] == role), default=0.0
    )


def at_rest(server: Server) -> dict[str, Any]:
    """Median RSS and PSS of the tree and of each role over MEMORY_SAMPLES looks."""
    looks = []
    for _ in range(MEMORY_SAMPLES):
        looks.append(server.memory())
        time.sleep(0.2)
    roles = sorted({m.role for look in looks for m in look})

    def median(field: str, role: str | None = None) -> float:
        sums = [sum(getattr(m, field) for m in look if role in (None, m.role)) for look in looks]
        return round(statistics.median(sums), 1)

    return {
        "tree_rss_mib": median("rss_mib"),
        "tree_pss_mib": median("pss_mib"),
        "by_role": {role: {"rss_mib": median("rss_mib", role)} for role in roles},
        "samples": [[dataclasses.asdict(m) for m in look] for look in looks],
    }


def warm_models(server: Server, models: list[str], digit: bytes, photo: bytes) -> None:
    """A few answers from each model, so that the memory is a serving worker's."""
    digit_body = multipart_body(digit)
    photo_body = multipart_body(photo, filename="photo.jpg", part_type="image/jpeg")
    for name in models:
        body, times = (
            (photo_body, WARM_PHOTOS) if name == ORIENTATION else (digit_body, WARM_DIGITS)
        )
        for _ in range(times):
            reply = call(f"{server.url}/models/{name}/predict", body, CONTENT_TYPE)
            if reply.status != 200:
                raise RuntimeError(f"{server.subject}: {name} answered {reply}")


def measure_memory(
    servers: dict[str, Server], served: dict[str, list[str]], digit: bytes, photo: bytes
) -> list[dict[str, Any]]:
    rows = []
    for subject, server in servers.items():
        warm_models(server, served[subject], digit, photo)
        time.sleep(SETTLE_SECONDS)
        listing = call(server.url + "/models").body
        rows.append(
            {
                "subject": subject,
                "models": served[subject],
                **at_rest(server),
                "listed": [
                    {"name": m["name"], "version": m["version"], "memory_mib": m["memory_mib"]}
                    for m in listing["models"]
                ],
                "worker": listing.get("worker"),
            }
        )
        log(f"memory: {subject:<24} tree RSS {rows[-1]['tree_rss_mib']:.1f} MiB")
    return rows


# -- speed of the default model ----------------------------------------------------------------


def measure_speed(
    servers: dict[str, Server],
    hey: str,
    body_path: Path,
    settings: Settings,
    placement: Placement,
) -> list[dict[str, Any]]:
    """hey at CONCURRENCY on each server's /predict, alternating servers over rounds."""
    for server in servers.values():
        run_hey(
            hey,
            server.url + "/predict",
            body_path,
            settings.warmup,
            CONCURRENCY,
            cpus=placement.load,
        )
    runs = []
    for index in range(settings.rounds):
        for subject in rotated(list(servers), index):
            result = run_hey(
                hey,
                servers[subject].url + "/predict",
                body_path,
                settings.requests,
                CONCURRENCY,
                cpus=placement.load,
            )
            runs.append(run_row(index + 1, result, subject=subject))
            log(
                f"speed round {index + 1} {subject:<24} {result.rps:7.0f} rps  "
                f"p99 {result.p99_ms:6.2f} ms  non-200 {result.non_200}"
            )
    return runs


def summarise_speed(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per subject: median rps and latencies across rounds, the rps spread, and the errors."""
    return {
        subject: {"rounds": len(mine), **spread(mine, ("p50_ms", "p99_ms"))}
        for (subject,), mine in grouped(runs, ("subject",)).items()
    }


def speed_ratios(
    runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], top: str, bottom: str
) -> dict[str, float]:
    """``top`` over ``bottom``: of the medians, and the median of each round's own ratio."""
    groups = grouped(runs, ("subject",))
    mine, theirs = groups[(top,)], groups[(bottom,)]
    return {
        "rps": summary[top]["rps"] / summary[bottom]["rps"],
        "p99_ms": summary[top]["p99_ms"] / summary[bottom]["p99_ms"],
        "rps_paired": paired(mine, theirs, itemgetter("rps")),
        "p99_ms_paired": paired(mine, theirs, itemgetter("p99_ms")),
    }


# -- version swaps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Swap:
    version: str  # the version asked for
    label: str  # what that version answers for the digit
    started: float  # perf_counter when the reload call was sent
    returned: float  # ... and when its answer came
    status: int
    answered_version: str | None

    @property
    def seconds(self) -> float:
        return self.returned - self.started


def reload(url: str, version: str, label: str) -> Swap:
    body = json.dumps({"parameters": {"version": version}}).encode()
    started = time.perf_counter()
    reply = call(f"{url}/v2/repository/models/{DEFAULT_MODEL}/load", body)
    returned = time.perf_counter()
    answered = reply.body.get("version") if isinstance(reply.body, dict) else None
    if reply.status != 200:
        log(f"reload to {version} answered {reply.status}: {reply.body}")
    return Swap(version, label, started, returned, reply.status, answered)


def alternating(labels: dict[str, str], current: str, count: int) -> list[str]:
    """``count`` versions to load in turn, starting with the one not ``current``."""
    other = next(version for version in labels if version != current)
    return [(other, current)[index % 2] for index in range(count)]


def idle_swaps(server: Server, labels: dict[str, str], current: str, count: int) -> dict[str, Any]:
    """Reloads one after the other with no load; after each, one /predict must answer the label
    of the version just loaded."""
    digit_body = multipart_body(DIGIT.read_bytes())
    rss_before = server.tree_rss_mib()
    swaps, answers = [], []
    for version in alternating(labels, current, count):
        swap = reload(server.url, version, labels[version])
        reply = predict(server.url, digit_body)
        swaps.append(swap)
        answers.append(reply.body.get("label") if reply.status == 200 else reply.status)
        time.sleep(0.2)
    time.sleep(SETTLE_SECONDS)
    return {
        "swaps": [swap_row(swap) for swap in swaps],
        "answers_after": answers,
        "all_answers_new": all(a == s.label for a, s in zip(answers, swaps, strict=True)),
        "seconds_median": statistics.median(swap.seconds for swap in swaps),
        "tree_rss_before_mib": round(rss_before, 1),
        "tree_rss_after_mib": round(server.tree_rss_mib(), 1),
    }


def swap_row(swap: Swap) -> dict[str, Any]:
    return {
        "version": swap.version,
        "seconds": swap.seconds,
        "status": swap.status,
        "answered_version": swap.answered_version,
    }


@dataclass(frozen=True)
class Probe:
    sent: float
    answered: float
    status: int
    label: str | None


class Prober:
    """POSTs the digit to /predict one request at a time on a thread while entered: when each
    was sent and answered, its status and its label."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.body = multipart_body(DIGIT.read_bytes())
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.perf_counter()
            try:
                reply = predict(self.url, self.body)
                status = reply.status
                label = reply.body.get("label") if status == 200 else None
            except OSError:
                status, label = 0, None  # no answer at all
            self.probes.append(Probe(sent, time.perf_counter(), status, label))


def check_probes(probes: list[Probe], swaps: list[Swap], first_label: str) -> dict[str, Any]:
    """Every probe sent after a reload answered, and answered before the next began, must carry
    the label of the version that reload loaded (before the first: ``first_label``); those that
    overlap a reload may carry either, and are counted by label."""
    windows = [(-math.inf, swaps[0].started if swaps else math.inf, first_label)]
    for index, swap in enumerate(swaps):
        following = swaps[index + 1].started if index + 1 < len(swaps) else math.inf
        windows.append((swap.returned, following, swap.label))
    checked, wrong, overlapping = 0, [], Counter()
    for probe in probes:
        window = next((w for w in windows if w[0] < probe.sent and probe.answered < w[1]), None)
        if window is None:
            overlapping[str(probe.label)] += 1
            continue
        checked += 1
        if probe.label != window[2]:
            wrong.append(dataclasses.asdict(probe) | {"expected": window[2]})
    return {
        "probes": len(probes),
        "non_200": sum(probe.status != 200 for probe in probes),
        "checked": checked,
        "wrong": wrong,
        "overlapping_a_reload": dict(overlapping),
    }


def parse_hey_summary(text: str) -> dict[str, Any]:
    """hey's text report: total time, statuses, errors (requests with no answer), p99 and the
    slowest answer."""

    def seconds(pattern: str) -> float | None:
        found = re.search(pattern + r"\s+([0-9.]+) secs", text)
        return float(found.group(1)) if found else None

    statuses = {
        code: int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", text)
    }
    errors_part = text.partition("Error distribution:")[2]
    errors = {
        message.strip(): int(count)
        for count, message in re.findall(r"^\s*\[(\d+)\]\s+(.+)$", errors_part, re.MULTILINE)
    }
    total = seconds(r"Total:")
    answered = sum(statuses.values())
    slowest, p99 = seconds(r"Slowest:"), seconds(r"99% in")
    return {
        "total_s": total,
        "statuses": statuses,
        "errors": errors,
        "sent": answered + sum(errors.values()),
        "non_200": answered - statuses.get("200", 0) + sum(errors.values()),
        "rps": statuses.get("200", 0) / total if total else 0.0,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "slowest_ms": slowest * 1000 if slowest is not None else None,
    }


def hey_open_ended(hey: str, url: str, body_path: Path) -> list[str]:
    return hey_argv(hey, url + "/predict", body_path, CONCURRENCY, duration=HEY_MAX_DURATION)


def swaps_under_load(
    server: Server,
    hey: str,
    body_path: Path,
    labels: dict[str, str],
    current: str,
    placement: Placement,
) -> dict[str, Any]:
    """hey on /predict from before the first reload to after the last, interrupted then (it
    reports what it saw on SIGINT), with the probe running alongside."""
    argv = hey_open_ended(hey, server.url, body_path)
    with Prober(server.url) as prober:
        load = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=pinned_to(placement.load),
        )
        time.sleep(LOAD_LEAD_SECONDS)
        swaps = []
        for version in alternating(labels, current, LOAD_SWAPS):
            swaps.append(reload(server.url, version, labels[version]))
            time.sleep(SWAP_GAP_SECONDS)
        still_loading = load.poll() is None
        load.send_signal(signal.SIGINT)
        output, _ = load.communicate(timeout=60)
    return {
        "hey": parse_hey_summary(output),
        "hey_output": output,
        "load_covered_every_reload": still_loading,
        "swaps": [swap_row(swap) for swap in swaps],
        "seconds_median": statistics.median(swap.seconds for swap in swaps),
        "probe": check_probes(prober.probes, swaps, labels[current]),
    }


# -- the memory bound ----------------------------------------------------------------------------


def bound_row(probe: str, start: float, peaks: dict[str, Any], final: float) -> dict[str, Any]:
    return {
        "probe": probe,
        "tree_rss_start_mib": round(start, 1),
        "peak_tree_rss_mib": peaks["peak_tree_rss_mib"],
        "peak_worker_rss_mib": peak_of(peaks, "worker"),
        "peak_arbiter_rss_mib": peak_of(peaks, "arbiter"),
        "tree_rss_final_mib": round(final, 1),
        "within_dyno": peaks["peak_tree_rss_mib"] <= DYNO_MIB,
        "peaks": peaks,
    }


def hostile_bound(home: Path, scratch: Path, models: str) -> dict[str, Any]:
    env = {**hostile.SERVER_ENV, "DLOPS_MODELS": models}
    server = dlops_server(home, scratch, env, subject="hostile")
    with running(server):
        accounted(server, hostile.AUTH)
        start = server.tree_rss_mib()
        with PeakRss.of(server) as peak:
            cases = hostile.run_cases(server)
        time.sleep(SETTLE_SECONDS)
        row = bound_row("bench/hostile.py's cases", start, peak.result(), server.tree_rss_mib())
    return {**row, "cases": cases["rows"], "server": launch(server), "log": log_notes(server)}


def soak_bound(base: Path, scratch: Path, models: str, hey: str, quick: bool) -> dict[str, Any]:
    variant = soak_bench.Variant(
        "dlops, three models", "dlops", {"DLOPS_MODELS": models}, "three models, one worker"
    )
    settings = soak_bench.Settings(
        requests=soak_bench.DEFAULTS["requests"][quick],
        warmup=soak_bench.WARMUP,
        concurrency=soak_bench.CONCURRENCY,
        sample_every=soak_bench.DEFAULTS["sample_every"][quick],
        subjects=[variant.name],
        image=DIGIT,
        output=RESULTS,
    )
    subject = soak_bench.make_subject(variant, base, scratch)
    body_path = scratch / "soak-body.bin"
    body_path.write_bytes(multipart_body(DIGIT.read_bytes()))
    with running(subject.server):
        accounted(subject.server)
        start = subject.server.tree_rss_mib()
        with PeakRss.of(subject.server) as peak:
            soak_bench.soak(settings, [subject], hey, body_path)
        time.sleep(SETTLE_SECONDS)
        final = subject.server.tree_rss_mib()
    summary = soak_bench.summarise(subject)
    kept = ("sent_after_warmup", "statuses", "warmup_statuses", "rps", "growth")
    row = bound_row(
        f"bench/soak.py: {settings.whole_batches(settings.warmup):,} + "
        f"{summary['sent_after_warmup']:,} requests at {settings.concurrency} clients",
        start,
        peak.result(),
        final,
    )
    return {
        **row,
        "soak": {key: summary[key] for key in kept},
        "server": launch(subject.server),
        "log": log_notes(subject.server),
    }


def batch_bound(
    home: Path, scratch: Path, models: str, photos: list[bytes], batches: int
) -> dict[str, Any]:
    body = multipart_files(photos, "photo{}.jpg", "image/jpeg")
    server = dlops_server(home, scratch, {"DLOPS_MODELS": models}, subject="batch")
    rows = []
    with running(server):
        # The budget the batch is split by: what the worker may use for requests' work, and what
        # each image of an orientation batch holds while it runs (activations and its example).
        listing = accounted(server)
        for index in range(batches):
            start = server.tree_rss_mib()
            with PeakRss.of(server) as peak:
                reply = call(
                    server.url + f"/models/{ORIENTATION}/predict_batch", body, CONTENT_TYPE
                )
            time.sleep(SETTLE_SECONDS)
            row = bound_row(
                f"predict_batch #{index + 1}", start, peak.result(), server.tree_rss_mib()
            )
            items = reply.body if reply.status == 200 else []
            row |= {
                "status": reply.status,
                "seconds": reply.seconds,
                "item_statuses": dict(Counter(str(item.get("status", 200)) for item in items)),
                "labels": dict(Counter(str(item.get("label")) for item in items)),
                "error": None if reply.status == 200 else reply.body,
            }
            rows.append(row)
            log(
                f"batch {index + 1}: {reply.status} in {reply.seconds:.2f} s, peak tree "
                f"{row['peak_tree_rss_mib']:.1f} MiB, final {row['tree_rss_final_mib']:.1f} MiB"
            )
    sizes = [len(photo) / 1024 for photo in photos]
    return {
        "body_bytes": len(body),
        "images": len(photos),
        "image_kib": {"min": min(sizes), "median": statistics.median(sizes), "max": max(sizes)},
        "batches": rows,
        "worker": listing["worker"],
        "orientation_memory_mib": next(
            m["memory_mib"] for m in listing["models"] if m["name"] == ORIENTATION
        ),
        "server": launch(server),
        "log": log_notes(server),
    }


# -- what ran ------------------------------------------------------------------------------------


def launch(server: Server) -> str:
    """The server's command line, with the settings that differ from `make serve`'s."""
    shown = {
        key: value
        for key, value in server.env.items()
        if key.startswith("DLOPS_") or key in ("API_KEY", "BENTOML_HOME")
    }
    argv = ["bentoml", *server.argv[1:]]
    line = " ".join(
        [
            *(f"{k}={shlex.quote(v)}" for k, v in shown.items()),
            taskset(server.cpus),
            shlex.join(argv),
        ]
    )
    # The throwaway directory (it holds the logs too) is gone once the run ends.
    return line.replace(str(server.log_path.parent), "$SCRATCH").replace("  ", " ")


def taskset(cpus: tuple[int, ...] | None) -> str:
    return f"taskset -c {','.join(map(str, cpus))}" if cpus else ""


def log_notes(server: Server) -> dict[str, Any]:
    """The warnings and errors of a server's log (tracebacks included): what went wrong, if."""
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    notes = [
        line
        for line in text.splitlines()
        if re.search(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|Error:", line)
    ]
    return {"warnings_and_errors": len(notes), "first": notes[:10]}


# -- the report ----------------------------------------------------------------------------------


def _memory_section(data: dict[str, Any]) -> list[str]:
    rows = {row["subject"]: row for row in data["memory"]}
    three = rows[THREE]
    listed = {entry["name"]: entry["memory_mib"] for entry in three["listed"]}
    lines = [
        "| server | models | tree RSS MiB | arbiter RSS | worker RSS | tree PSS | "
        "/models `resident` MiB (alone) | /models `resident` MiB (with the three) | "
        "per image in a batch MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for subject, row in rows.items():
        roles = row["by_role"]
        alone = fmt(row["listed"][0]["memory_mib"]["resident"]) if len(row["models"]) == 1 else ""
        within = (
            fmt(listed[row["models"][0]]["resident"])
            if len(row["models"]) == 1
            else " + ".join(fmt(listed[name]["resident"]) for name in row["models"])
        )
        per_image = " / ".join(
            fmt(m["memory_mib"]["per_image_in_a_batch"], 2) for m in row["listed"]
        )
        lines.append(
            f"| {subject} | {', '.join(row['models'])} | **{fmt(row['tree_rss_mib'])}** "
            f"| {fmt(roles.get('arbiter', {}).get('rss_mib'))} "
            f"| {fmt(roles.get('worker', {}).get('rss_mib'))} | {fmt(row['tree_pss_mib'])} "
            f"| {alone} | {within} | {per_image} |"
        )
    added = three["tree_rss_mib"] - rows[ONE]["tree_rss_mib"]
    worker = three.get("worker") or {}
    lines += [
        "",
        f"The three models together: {fmt(three['tree_rss_mib'])} MiB, {added:+,.1f} MiB over "
        f"{DEFAULT_MODEL} alone. `resident` is the worker's RSS growth while a model loads and "
        "warms up, so the first model loaded also carries onnxruntime's first-session costs. "
        "The three-model worker's budget as /models reports it: "
        + ", ".join(f"{key} {value}" for key, value in worker.items() if key != "pid")
        + ".",
    ]
    return lines


def _speed_section(data: dict[str, Any]) -> list[str]:
    speed = data["speed"]
    lines = [
        "| server | rounds | rps (median) | rps min–max | p50 ms | p99 ms | non-200 / sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for subject, row in speed["summary"].items():
        lines.append(
            f"| {subject} | {row['rounds']} | {row['rps']:,.0f} | {row['rps_min']:,.0f}–"
            f"{row['rps_max']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['non_200']} / {row['sent']} |"
        )
    ratio = speed["ratios"]
    lines.append(
        f"| **three / one** | | **{ratio['rps']:.3f}×** (paired by round "
        f"{ratio['rps_paired']:.3f}×) | | | **{ratio['p99_ms']:.3f}×** (paired "
        f"{ratio['p99_ms_paired']:.3f}×) | |"
    )
    return lines


def _swap_section(data: dict[str, Any]) -> list[str]:
    idle, loaded = data["swaps"]["idle"], data["swaps"]["under_load"]

    def times(rows: list[dict[str, Any]]) -> str:
        seconds = [row["seconds"] * 1000 for row in rows]
        return (
            f"**{statistics.median(seconds):,.1f}** | {min(seconds):,.1f}–{max(seconds):,.1f} "
            f"| {len(seconds)} | {sum(row['status'] != 200 for row in rows)}"
        )

    return [
        "| when | reload wall time ms (median) | min–max | reloads | non-200 reloads |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| idle | {times(idle['swaps'])} |",
        f"| under load (hey, {CONCURRENCY} clients) | {times(loaded['swaps'])} |",
        "",
        f"Idle: after each reload one /predict answered the new version's label: "
        f"{'yes, every time' if idle['all_answers_new'] else '**no**'} "
        f"({', '.join(map(str, idle['answers_after']))}). Tree RSS before the idle reloads "
        f"{fmt(idle['tree_rss_before_mib'])} MiB, after them "
        f"{fmt(idle['tree_rss_after_mib'])} MiB.",
    ]


def _failures_section(data: dict[str, Any]) -> list[str]:
    loaded = data["swaps"]["under_load"]
    hey_result, probe = loaded["hey"], loaded["probe"]
    statuses = ", ".join(f"[{code}] {count:,}" for code, count in hey_result["statuses"].items())
    errors = "; ".join(f"{count} × {message}" for message, count in hey_result["errors"].items())
    lines = [
        f"hey, {CONCURRENCY} clients on /predict, {hey_result['total_s']:.1f} s from before the "
        f"first of {LOAD_SWAPS} reloads to after the last: {hey_result['sent']:,} requests, "
        f"status code distribution {statuses}"
        + (f"; errors (no answer): {errors}" if errors else "; no request without an answer")
        + f". **Non-200: {hey_result['non_200']}.** {hey_result['rps']:,.0f} rps, p99 "
        f"{fmt(hey_result['p99_ms'])} ms, slowest {fmt(hey_result['slowest_ms'])} ms. The load "
        + ("covered every reload." if loaded["load_covered_every_reload"] else "**ended early**.")
        + "",
        "",
        f"The probe (one more client, one request at a time): {probe['probes']:,} answers, "
        f"{probe['non_200']} not 200; {probe['checked']:,} were sent after a reload had answered "
        "and answered before the next began, and "
        + (
            "every one carried the label of the version just loaded"
            if not probe["wrong"]
            else f"**{len(probe['wrong'])} carried another version's label**"
        )
        + f" ({data['labels'][data['versions']['A']]!r} for A, "
        f"{data['labels'][data['versions']['B']]!r} for B). Answers that overlapped a reload, by "
        f"label: {probe['overlapping_a_reload']}.",
    ]
    return lines


def _bound_section(data: dict[str, Any]) -> list[str]:
    bound = data["bound"]
    rows = [bound["hostile"], bound["soak"], *bound["batch"]["batches"]]
    lines = [
        f"| probe | tree RSS at start MiB | peak tree RSS | of which peak worker | peak arbiter "
        f"| final tree RSS ({SETTLE_SECONDS:g} s after) | peak ≤ {DYNO_MIB} MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['probe']} | {fmt(row['tree_rss_start_mib'])} "
            f"| **{fmt(row['peak_tree_rss_mib'])}** | {fmt(row['peak_worker_rss_mib'])} "
            f"| {fmt(row['peak_arbiter_rss_mib'])} "
            f"| {fmt(row['tree_rss_final_mib'])} | {'yes' if row['within_dyno'] else '**no**'} |"
        )
    batch, soaked = bound["batch"], bound["soak"]["soak"]
    kib = batch["image_kib"]
    first = batch["batches"][0]
    lines += [
        "",
        f"Soak: statuses {soaked['statuses']} (warm-up {soaked['warmup_statuses']}), "
        f"{soaked['rps']:,.0f} rps, growth after the warm-up {soaked['growth']:+.1%}.",
        "",
        f"Batch: {batch['images']} JPEGs of {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} (colour gradients "
        f"under noise σ {data['photo_noise']:.2f}, quality {PHOTO_QUALITY}), "
        f"{kib['min']:.0f}–{kib['max']:.0f} KiB (median {kib['median']:.0f}), "
        f"{batch['body_bytes'] / 2**20:.2f} MiB in one request to "
        f"`/models/{ORIENTATION}/predict_batch`; "
        + "; ".join(
            f"#{index + 1}: {row['status']} in {row['seconds']:.2f} s, items {row['item_statuses']}"
            for index, row in enumerate(batch["batches"])
        )
        + f". Labels of the first: {first['labels']}.",
        "",
        *_split_note(batch),
        "",
        "bench/hostile.py's cases against the three-model server (`API_KEY` set, "
        "`DLOPS_REQUEST_TIMEOUT_SECONDS=3`):",
        "",
        "| case | answer | longest /livez | peak tree RSS MiB |",
        "| --- | --- | ---: | ---: |",
    ]
    for case in bound["hostile"]["cases"]:
        outcome = re.sub(r"\s+", " ", case["outcome"]).replace("|", "\\|")[:140]
        lines.append(
            f"| {case['case']} | {outcome} | {case['longest_livez_s']:.2f} s "
            f"| {case['peak_tree_rss_mib']:.0f} |"
        )
    return lines


def _split_note(batch: dict[str, Any]) -> list[str]:
    """How the batch server's worker budget splits the batch, as GET /models reported it."""
    worker, per_image = batch["worker"], batch["orientation_memory_mib"]["per_image_in_a_batch"]
    part = max(1, min(batch["images"], int(worker["requests_work_mib"] // per_image)))
    return [
        f"The batch server's worker before the batches (GET /models): limit "
        f"{worker['limit_mib']:,.0f} MiB = {worker['before_any_model_mib']:,.1f} before any "
        f"model + {worker['models_mib']:,.1f} models + {worker['request_bodies_mib']:,.0f} request "
        f"bodies + {worker['requests_work_mib']:,.1f} for requests' work; RSS "
        f"{worker['resident_now_mib']:,.1f} MiB. Each {ORIENTATION} image holds {per_image} MiB "
        f"while the model runs (its activations and its example), so the batch runs in parts of "
        f"about {part} images ({part * per_image:,.0f} MiB).",
    ]


def _logs_section(data: dict[str, Any]) -> list[str]:
    lines = []
    for name, notes in data["logs"].items():
        count = notes["warnings_and_errors"]
        lines.append(f"- {name}: {count} warning or error line{'s' if count != 1 else ''}")
        lines += [f"    - `{line[:220]}`" for line in notes["first"][:5]]
    return lines


def markdown(data: dict[str, Any]) -> list[str]:
    versions = data["versions"]
    commands = data["commands"]
    lines = [
        "# Several models in one server: memory, the default model's speed, version swaps",
        "",
        *run_header(data),
        "",
        f"Phases 1–4: {data['placement']}; phase 5 unpinned. Each server has a throwaway "
        f"BentoML home with the same store: {DEFAULT_MODEL} version A ({versions['A']}, "
        f"threshold 0.5) and B ({versions['B']}, `--threshold {THRESHOLD_B}`), {DIGITS_MODEL} "
        f"and {ORIENTATION}. The three-model server serves `DLOPS_MODELS={data['models']}` "
        f"({DEFAULT_MODEL} is the default, answering /predict). Load: hey POSTs "
        f"`{DIGIT.relative_to(ROOT)}` as the multipart field `file`; P(3) = "
        f"{data['digit_proba']:.4f}, so A answers {data['labels'][versions['A']]!r} and B "
        f"{data['labels'][versions['B']]!r}.",
        "",
        "## 1. Memory per model",
        "",
        f"At rest after {WARM_DIGITS} digits (or {WARM_PHOTOS} photos) per model, median of "
        f"{MEMORY_SAMPLES} looks "
        "at every process of the tree (RSS, and PSS, which splits shared pages between them).",
        "",
        *_memory_section(data),
        "",
        "## 2. The default model's speed with one model loaded and with three",
        "",
        f"hey, {CONCURRENCY} clients, {data['settings']['requests']:,} requests per measurement "
        f"after {data['settings']['warmup']:,} warm-up requests per server; the two servers "
        f"alternate over {data['settings']['rounds']} rounds (order rotating); medians across "
        "rounds. rps counts 200 answers only.",
        "",
        *_speed_section(data),
        "",
        "## 3. Time to swap a version",
        "",
        f"`POST /v2/repository/models/{DEFAULT_MODEL}/load` with "
        '`{"parameters": {"version": V}}`, alternating A and B on the three-model server: the '
        "wall time of the call, which answers once the new version serves.",
        "",
        *_swap_section(data),
        "",
        "## 4. Requests during swaps",
        "",
        *_failures_section(data),
        "",
        f"## 5. The memory bound: a {DYNO_MIB} MiB dyno, one worker, three models",
        "",
        "Each probe on a fresh three-model server (unpinned, default settings: the worker's budget "
        "is `DLOPS_MAX_WORKER_MEMORY=384` MiB); the tree's RSS sampled every "
        f"{PEAK_SAMPLE_SECONDS * 1000:.0f} ms for the peak.",
        "",
        *_bound_section(data),
        "",
        "## Server logs",
        "",
        *_logs_section(data),
        "",
        "## Commands",
        "",
        "```sh",
        "# the model store (BENTOML_HOME=<throwaway>)",
        *commands["imports"],
        "# the servers",
        *commands["servers"],
        "# the load",
        *commands["hey"],
        "```",
        "",
    ]
    return lines


# -- main ----------------------------------------------------------------------------------------

ONE, THREE = f"{DEFAULT_MODEL} alone", "three models"


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    requests: int
    warmup: int
    idle_swaps: int
    batches: int
    output: Path


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run of a few minutes")
    parser.add_argument("--rounds", type=int, help="speed rounds (default 5, quick 2)")
    parser.add_argument(
        "--requests", type=int, help="requests per speed measurement (default 5000, quick 1000)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    chosen = {name: full_quick[args.quick] for name, full_quick in DEFAULTS.items()}
    chosen.update({k: v for k, v in (("rounds", args.rounds), ("requests", args.requests)) if v})
    if min(chosen.values()) < 1 or chosen["requests"] < CONCURRENCY:
        parser.error(f"counts must be at least 1, --requests at least {CONCURRENCY}")
    return Settings(quick=args.quick, output=args.output, **chosen)


def pinned_phases(
    settings: Settings, hey: str, placement: Placement, scratch: Path, base: Path, store: Store
) -> dict[str, Any]:
    """Phases 1-4: the servers of one model and the three-model server, pinned."""
    body_path = scratch / "body.bin"
    body_path.write_bytes(multipart_body(store.digit))

    def pinned(subject: str, served: str, extra: dict[str, str] | None = None) -> Server:
        slug = re.sub(r"[^a-z0-9]+", "-", subject)
        home = throwaway_home(base, scratch, slug)
        env = {"DLOPS_MODELS": served, **(extra or {})}
        return dlops_server(home, scratch, env, subject=slug, cpus=placement.server)

    one = pinned(ONE, f"{DEFAULT_MODEL}:{store.version_a}")
    three = pinned(THREE, store.models, {"DLOPS_REPOSITORY_API": "1"})
    alone = {f"{name} alone": pinned(f"{name} alone", name) for name in (DIGITS_MODEL, ORIENTATION)}
    served = {ONE: [DEFAULT_MODEL], THREE: [DEFAULT_MODEL, DIGITS_MODEL, ORIENTATION]}
    served |= {f"{name} alone": [name] for name in (DIGITS_MODEL, ORIENTATION)}
    with running(one, three):
        first = predict(three.url, multipart_body(store.digit)).body
        with running(*alone.values()):
            memory = measure_memory(
                {ONE: one, **alone, THREE: three}, served, store.digit, store.photos[0]
            )
        runs = measure_speed({ONE: one, THREE: three}, hey, body_path, settings, placement)
        labels = {version: label_of(base, version, first["proba"]) for version in store.versions}
        if len(set(labels.values())) < 2 or labels[store.version_a] != first["label"]:
            raise SystemExit(f"the two versions cannot be told apart by the digit: {labels}")
        log("reloads, idle")
        idle = idle_swaps(three, labels, store.version_a, settings.idle_swaps)
        log("reloads under load")
        current = idle["swaps"][-1]["version"]
        loaded = swaps_under_load(three, hey, body_path, labels, current, placement)
    summary = summarise_speed(runs)
    servers = {ONE: one, THREE: three, **alone}
    return {
        "labels": labels,
        "digit_proba": first["proba"],
        "memory": memory,
        "speed": {
            "runs": runs,
            "summary": summary,
            "ratios": speed_ratios(runs, summary, THREE, ONE),
        },
        "swaps": {"idle": idle, "under_load": loaded},
        "servers": [launch(server) for server in servers.values()],
        "logs": {name: log_notes(server) for name, server in servers.items()},
    }


def bound_phase(
    settings: Settings, hey: str, scratch: Path, base: Path, store: Store
) -> dict[str, Any]:
    """Phase 5: each probe on a fresh, unpinned three-model server."""
    log("memory bound: hostile cases")
    hostile_result = hostile_bound(throwaway_home(base, scratch, "hostile"), scratch, store.models)
    log("memory bound: soak")
    soak_result = soak_bound(base, scratch, store.models, hey, settings.quick)
    log("memory bound: a batch of photos")
    batch_result = batch_bound(
        throwaway_home(base, scratch, "batch"),
        scratch,
        store.models,
        store.photos,
        settings.batches,
    )
    return {"hostile": hostile_result, "soak": soak_result, "batch": batch_result}


def hey_commands(settings: Settings, placement: Placement) -> list[str]:
    # run_hey's (bench/load.py) command line, and the open-ended one of the reloads.
    speed = hey_argv(
        "hey", "URL/predict", Path("body.bin"), CONCURRENCY, settings.requests, csv_output=True
    )
    reloads = hey_open_ended("hey", "URL", Path("body.bin"))
    pin = taskset(placement.load)
    return [
        f"{pin} {shlex.join(speed)}   # speed: each measurement".strip(),
        f"{pin} {shlex.join(reloads)}   # during the reloads; SIGINT after the last".strip(),
    ]


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    started = time.perf_counter()
    hey = ensure_hey()
    machine = machine_info()
    placement = place(1)
    log(placement.note)
    log(f"making {BATCH_IMAGES} photo-like JPEGs")
    photos, noise = photo_batch(BATCH_IMAGES)
    with tempfile.TemporaryDirectory(prefix="dlops-repository-") as temporary:
        scratch = Path(temporary)
        base = scratch / "store"
        log("importing the models into a throwaway BentoML home")
        store = build_store(base, photos)
        pinned = pinned_phases(settings, hey, placement, scratch, base, store)
        bound = bound_phase(settings, hey, scratch, base, store)
    servers = [*pinned.pop("servers"), *(probe.pop("server") for probe in bound.values())]
    logs = pinned.pop("logs") | {name: probe.pop("log") for name, probe in bound.items()}
    data: dict[str, Any] = {
        "command": command_line("bench.repository", argv),
        "settings": {**dataclasses.asdict(settings), "output": str(settings.output)},
        "machine": machine_at_end(machine),
        "placement": placement.note,
        "models": store.models,
        "versions": {"A": store.version_a, "B": store.version_b},
        "photo_noise": noise,
        **pinned,
        "bound": bound,
        "logs": logs,
        "commands": {
            "imports": store.commands,
            "servers": servers,
            "hey": hey_commands(settings, placement),
        },
        "wall_seconds": time.perf_counter() - started,
    }
    json_path, md_path = write_results(settings.output, STEM, data, markdown(data))
    log(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    run_study(main)
