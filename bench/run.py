"""Benchmark dlops against the seed article's FastAPI app: `python -m bench.run [--quick]`.

The subjects: the ceiling (the service's own code in this process, no HTTP), the seed app under
uvicorn, the two floors of bench/floors.py (an HTTP floor that answers a constant, and a "lean"
work floor that decodes and runs the model with no framework), dlops under `bentoml serve`, and
dlops' /predict_batch with 64 images per request. Both
servers run side by side and are measured in alternating rounds (round -> concurrency ->
subject), so whatever drifts during the run (CPU boost, page cache, a neighbour's load) hits all
alike. With `--workers 1 2` that happens once per worker count, each with its own pair of
servers. Then memory, cold starts and the image size. Writes bench/results/latest.{json,md,png},
or workers.{json,md,png} when comparing worker counts, so that neither run overwrites the other.

`--baseline REF` adds a subject: dlops as it was at git REF (its files from `git archive`, its own
model import), served beside the others and measured in the same rounds, so that a change's
before/after comes from one run on one machine (`make bench BENCH_ARGS="--baseline REF"`). The
orientation model, a compute-heavy subject, has its own module: `python -m bench.orientation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import report
from bench.ceiling import BATCH, measure_ceiling
from bench.load import default_image, ensure_hey, is_mnist_sized, multipart_body, post_once, run_hey
from bench.machine import container_image_size, machine_at_end, machine_info
from bench.placement import Placement, place
from bench.report import BASELINE, BATCH_SUBJECT, DLOPS, FLOOR, LEAN, SEED
from bench.rounds import rotated, run_row
from bench.servers import (
    MAKE_SERVE,
    MODEL,
    ROOT,
    Server,
    baseline_tree,
    dlops_server,
    floor_servers,
    import_model,
    make_serve_server,
    running,
    seed_server,
)
from bench.study import RESULTS, command_line, log, quick_or_full, run_study

CONCURRENCIES = (1, 16, 64)
# Each batch request carries 64 images: 64 of them in flight would be 4096 images queued, far
# beyond what the single-image levels compare with.
BATCH_CONCURRENCIES = (1, 16)
WARMUP_CONCURRENCY = 16
# (full, --quick): the full run takes a few minutes on 2 cores, the quick one about one. A batch
# request costs about a dozen single ones, so it gets a fifth of the requests: a measurement then
# takes 2-3 s instead of 1.
DEFAULTS = {
    "rounds": (5, 1),
    "requests": (3000, 1000),
    "batch_requests": (600, 200),
    "warmup": (1000, 300),
    "cold_starts": (5, 1),
}
# The default run writes latest.*; any other set of worker counts writes this stem instead.
DEFAULT_WORKERS = [1]
WORKERS_STEM = "workers"


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int
    batch_requests: int
    warmup: int
    cold_starts: int
    concurrency: list[int]
    batch_concurrency: list[int]
    workers: list[int]
    dlops_env: dict[str, str]
    image: Path
    output: Path
    baseline: str | None = None
    pin: bool = True


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 1)")
    parser.add_argument(
        "--requests", type=int, help="requests per measurement (default 3000, quick 1000)"
    )
    parser.add_argument(
        "--batch-requests",
        type=int,
        help=f"requests per /predict_batch measurement, {BATCH} images each "
        "(default 600, quick 200)",
    )
    parser.add_argument(
        "--warmup", type=int, help="warm-up requests per server (default 1000, quick 300)"
    )
    parser.add_argument(
        "--cold-starts", type=int, help="starts per server for the cold start (default 5, quick 1)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCIES),
        help="connections (default 1 16 64)",
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        nargs="+",
        default=list(BATCH_CONCURRENCIES),
        help=f"connections for {BATCH_SUBJECT} (default 1 16)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=DEFAULT_WORKERS,
        help="worker counts to compare, each for both servers: uvicorn --workers W and "
        f"DLOPS_WORKERS=W (default 1; other than that, writes {WORKERS_STEM}.*)",
    )
    parser.add_argument(
        "--dlops-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for bentoml serve, e.g. DLOPS_ACCESS_LOG=1 (repeatable)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help=f"also serve dlops as it was at git REF (e.g. the commit before a change), as the "
        f"subject {BASELINE!r}, measured in the same rounds: before/after from one run",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let servers and hey share every core (default: with W workers, when there are "
        "more than W cores, servers run on W of them and hey on the rest, as taskset pins)",
    )
    parser.add_argument("--image", type=Path, help="28x28 grayscale PNG (default: a fixture)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    counts = quick_or_full(args, DEFAULTS)
    levels = [*args.concurrency, *args.batch_concurrency]
    if min(counts.values()) < 1 or min(levels) < 1 or min(args.workers) < 1:
        parser.error("counts, concurrencies and workers must be at least 1")
    if counts["requests"] < max(args.concurrency):
        parser.error("--requests must be at least the highest --concurrency")
    if counts["batch_requests"] < max(args.batch_concurrency):
        parser.error("--batch-requests must be at least the highest --batch-concurrency")
    if len(set(args.workers)) != len(args.workers):
        parser.error("--workers: each worker count once")
    dlops_env = dict(args.dlops_env)
    if "DLOPS_WORKERS" in dlops_env:
        parser.error("set the worker count with --workers, which applies to both servers")
    image = args.image or default_image()
    if not is_mnist_sized(image):
        parser.error(f"{image} is not a 28x28 grayscale PNG, which the seed app needs")
    return Settings(
        **counts,
        concurrency=args.concurrency,
        batch_concurrency=args.batch_concurrency,
        workers=args.workers,
        dlops_env=dlops_env,
        image=image.resolve(),
        output=args.output,
        baseline=args.baseline,
        pin=args.pin,
    )


@dataclass(frozen=True)
class Subject:
    """What hey measures: one route of a running server, the body it gets and at which levels."""

    name: str
    server: Server
    path: str
    body_path: Path
    images_per_request: int
    requests: int
    concurrency: list[int]

    @property
    def url(self) -> str:
        return self.server.url + self.path


def _server_factories(
    settings: Settings,
    workers: int,
    home: Path,
    log_dir: Path,
    cpus: tuple[int, ...] | None = None,
) -> dict[str, Callable[[], Server]]:
    env = {**settings.dlops_env, "DLOPS_WORKERS": str(workers)}
    return {
        SEED: partial(seed_server, log_dir, workers, cpus=cpus),
        DLOPS: partial(dlops_server, home, log_dir, env, cpus=cpus),
    }


def check_batch_answer(answer: Any, label: str) -> dict[str, Any]:
    """A record of /predict_batch's answer, once it is known to answer every image.

    hey only sees the status: a route that answered 200 with errors (or too few answers) fast
    would otherwise look like speed.
    """
    items = answer if isinstance(answer, list) else []
    good = [i for i in items if isinstance(i, dict) and set(i) == {"proba", "label"}]
    if len(items) != BATCH or len(good) != BATCH or {i["label"] for i in good} != {label}:
        raise RuntimeError(
            f"/predict_batch did not answer {BATCH} x {{proba, label: {label!r}}}: "
            f"{str(answer)[:500]}"
        )
    labels = Counter(item["label"] for item in items)
    return {"items": len(items), "labels": dict(labels), "first": items[0]}


def measure_load(
    settings: Settings,
    workers: int,
    placement: Placement,
    servers: dict[str, Server],
    hey: str,
    body_path: Path,
    batch_body_path: Path,
    model_entry: Path,
) -> dict[str, Any]:
    """Answers, ceiling and load in alternating rounds, then memory; the servers are running."""
    single_levels = settings.concurrency
    subjects = [
        *(
            Subject(name, servers[name], "/predict", body_path, 1, settings.requests, single_levels)
            for name in (SEED, FLOOR, LEAN, BASELINE, DLOPS)
            if name in servers
        ),
        Subject(
            BATCH_SUBJECT,
            servers[DLOPS],
            "/predict_batch",
            batch_body_path,
            BATCH,
            settings.batch_requests,
            settings.batch_concurrency,
        ),
    ]
    tag = f"[{workers} worker{'s' if workers > 1 else ''}]"
    answers = {s.name: post_once(s.url, s.body_path.read_bytes()) for s in subjects}
    answers[BATCH_SUBJECT] = check_batch_answer(answers[BATCH_SUBJECT], answers[DLOPS]["label"])
    log(f"{tag} answers: {answers}")
    if BASELINE in answers and answers[BASELINE] != answers[DLOPS]:
        log(f"warning: {BASELINE} answers {answers[BASELINE]}, dlops {answers[DLOPS]}")
    if answers[SEED].get("label") != answers[DLOPS].get("label"):
        log("warning: the subjects disagree about the image; the figures compare different work")
    for subject in subjects:
        # Proportional to the measurement, so a batch warm-up is not 64 times longer.
        requests = max(WARMUP_CONCURRENCY, settings.warmup * subject.requests // settings.requests)
        run_hey(
            hey, subject.url, subject.body_path, requests, WARMUP_CONCURRENCY, cpus=placement.load
        )
        log(f"{tag} warmed up {subject.name}")
    png = settings.image.read_bytes()
    levels = list(dict.fromkeys([*settings.concurrency, *settings.batch_concurrency]))
    runs: list[dict[str, Any]] = []
    ceilings = []
    for round_index in range(settings.rounds):
        ceiling = measure_ceiling(png, model_entry)
        ceilings.append(dataclasses.asdict(ceiling))
        log(
            f"{tag} round {round_index + 1}/{settings.rounds}: ceiling "
            f"{ceiling.single_images_per_s:,.0f} images/s single, "
            f"{ceiling.batched_images_per_s:,.0f} batched"
        )
        for concurrency in levels:
            present = [s for s in subjects if concurrency in s.concurrency]
            for subject in rotated(present, round_index):
                result = run_hey(
                    hey,
                    subject.url,
                    subject.body_path,
                    subject.requests,
                    concurrency,
                    cpus=placement.load,
                )
                runs.append(
                    run_row(
                        round_index + 1,
                        result,
                        workers=workers,
                        subject=subject.name,
                        images_per_request=subject.images_per_request,
                    )
                )
                log(
                    f"{tag} round {round_index + 1} c={concurrency:<3} {subject.name:<14} "
                    f"{result.rps:7.0f} rps  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms  non-200 {result.non_200}"
                    + (f" {result.statuses}" if result.non_200 else "")
                )
    memory = [
        {
            "subject": name,
            "workers": workers,
            "processes": [dataclasses.asdict(m) for m in server.memory()],
        }
        for name, server in servers.items()
    ]
    return {
        "answers": [
            {"subject": name, "workers": workers, "answer": answer}
            for name, answer in answers.items()
        ],
        "ceilings": ceilings,
        "runs": runs,
        "memory": memory,
    }


def measure_cold_starts(settings: Settings, home: Path, log_dir: Path) -> list[dict[str, Any]]:
    """Each subject started and stopped in turn; with one worker, `make serve` too, as a user
    starts the service: after one untimed run, so that it finds a set-up checkout (its import a
    no-op), as `make serve` does every time after the first."""
    measured = []
    for workers in settings.workers:
        starts = _server_factories(settings, workers, home, log_dir)
        if workers == 1:
            env = {**settings.dlops_env, "DLOPS_WORKERS": "1"}
            starts[MAKE_SERVE] = partial(make_serve_server, home, log_dir, env)
            first = starts[MAKE_SERVE]()
            first.start()
            try:
                first.wait_ready()
            finally:
                first.stop()
        samples: dict[str, list[float]] = {name: [] for name in starts}
        probes = {}
        for index in range(settings.cold_starts):
            for name in rotated(list(starts), index):
                server = starts[name]()
                probes[name] = server.ready_path
                try:
                    server.start()
                    samples[name].append(server.wait_ready())
                finally:
                    server.stop()
                log(
                    f"cold start {index + 1}/{settings.cold_starts} {name}, {workers} worker(s): "
                    f"{samples[name][-1]:.2f} s"
                )
        measured += [
            {"subject": name, "workers": workers, "probe": probes[name], "samples_s": samples[name]}
            for name in samples
        ]
    return measured


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    started = time.perf_counter()
    if max(settings.workers) > 1 and importlib.util.find_spec("uvloop") is None:
        # uvicorn --workers N hands its workers a listening socket with proto 0; asyncio then
        # leaves Nagle on for every connection (uvloop does not), and each keep-alive request
        # waits ~40 ms for a delayed ACK: ~23 rps at one client. Kludex/uvicorn#3149.
        log(
            "warning: uvloop is not installed: the seed with more than one worker will measure "
            "Nagle's algorithm, not the app (~44 ms per request; uvicorn issue #3149)"
        )
    hey = ensure_hey()
    machine = machine_info()  # after hey's install, which it reports on
    png = settings.image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="dlops-bench-") as temporary:
        scratch = Path(temporary)
        body_path = scratch / "body.bin"
        body_path.write_bytes(multipart_body(png))
        batch_body_path = scratch / "batch-body.bin"
        batch_body_path.write_bytes(multipart_body(png, copies=BATCH))
        home = scratch / "bentoml"
        log("importing the model into a temporary BentoML home")
        model_entry = import_model(home)
        baseline = None
        if settings.baseline is not None:
            tree, commit = baseline_tree(settings.baseline, scratch / "baseline")
            log(f"importing the model with {settings.baseline} ({commit[:12]})'s import_model.py")
            baseline_home = scratch / "bentoml-baseline"
            import_model(baseline_home, tree / MODEL.relative_to(ROOT), tree=tree)
            baseline = {"ref": settings.baseline, "commit": commit, "tree": tree}
        measured = []
        placements = []
        # One worker count after the other: two pairs of servers side by side would split the
        # shared libraries' pages four ways and blur the memory figures.
        for workers in settings.workers:
            placement = place(workers, settings.pin)
            placements.append({"workers": workers, **dataclasses.asdict(placement)})
            cpus = placement.server
            factories = _server_factories(settings, workers, home, scratch, cpus)
            servers = {name: make() for name, make in factories.items()}
            servers.update(floor_servers(scratch, workers, cpus))
            if baseline is not None:
                servers[BASELINE] = dlops_server(
                    baseline_home,
                    scratch,
                    {**settings.dlops_env, "DLOPS_WORKERS": str(workers)},
                    tree=baseline["tree"],
                    subject=BASELINE,
                    cpus=cpus,
                )
            with running(*servers.values()):
                log(
                    f"{workers} worker(s), {placement.note}: "
                    + ", ".join(f"{name} at {server.url}" for name, server in servers.items())
                )
                measured.append(
                    measure_load(
                        settings,
                        workers,
                        placement,
                        servers,
                        hey,
                        body_path,
                        batch_body_path,
                        model_entry,
                    )
                )
        cold_start = measure_cold_starts(settings, home, scratch)
    runs = [run for block in measured for run in block["runs"]]
    ceilings = [ceiling for block in measured for ceiling in block["ceilings"]]
    summary = report.summarise(runs)
    data = {
        "command": command_line("bench.run", argv),
        "settings": {
            **dataclasses.asdict(settings),
            "image": str(settings.image.relative_to(ROOT))
            if settings.image.is_relative_to(ROOT)
            else str(settings.image),
            "image_bytes": len(png),
            "image_sha256": hashlib.sha256(png).hexdigest(),
            "output": str(settings.output),
        },
        "machine": machine_at_end(machine),
        "answers": [answer for block in measured for answer in block["answers"]],
        "ceiling": {"batch": BATCH, "rounds": ceilings, **report.summarise_ceiling(ceilings)},
        "load": {
            "runs": runs,
            "summary": summary,
            "ratios": report.ratios(summary, runs, DLOPS, SEED),
            "batch_ratios": report.ratios(summary, runs, BATCH_SUBJECT, DLOPS),
            "baseline_ratios": report.ratios(summary, runs, DLOPS, BASELINE) if baseline else [],
            "lean_ratios": report.ratios(summary, runs, DLOPS, LEAN),
            "floor_ratios": report.ratios(summary, runs, DLOPS, FLOOR),
            "baseline_vs_seed": report.ratios(summary, runs, BASELINE, SEED) if baseline else [],
        },
        "baseline": {"ref": baseline["ref"], "commit": baseline["commit"]} if baseline else None,
        "placements": placements,
        "scaling": report.scaling(summary),
        "memory": [entry for block in measured for entry in block["memory"]],
        "cold_start": cold_start,
        "image_size": container_image_size(),
        "wall_seconds": time.perf_counter() - started,
    }
    stem = "latest" if settings.workers == DEFAULT_WORKERS else WORKERS_STEM
    for path in report.write_all(settings.output, stem, data):
        log(f"wrote {path}")


if __name__ == "__main__":
    run_study(main)
