"""Benchmark dlops against the seed article's FastAPI app: `python -m bench.run [--quick]`.

Three subjects: the ceiling (the service's own code in this process, no HTTP), the seed app under
uvicorn and dlops under `bentoml serve`. Both servers run side by side and are measured in
alternating rounds (round -> concurrency -> subject), so whatever drifts during the run (CPU
boost, page cache, a neighbour's load) hits both alike. Then cold starts, memory and the image
size. Writes bench/results/latest.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bench import report
from bench.ceiling import BATCH, measure_ceiling
from bench.load import ensure_hey, multipart_body, post_once, run_hey
from bench.machine import container_image_size, machine_info
from bench.servers import ROOT, Server, dlops_server, import_model, seed_server

FIXTURES = ROOT / "tests" / "fixtures" / "digits"
RESULTS = ROOT / "bench" / "results"
CONCURRENCIES = (1, 16, 64)
WARMUP_CONCURRENCY = 16
# (full, --quick): the full run takes a few minutes on 2 cores, the quick one about one.
DEFAULTS = {
    "rounds": (5, 1),
    "requests": (3000, 1000),
    "warmup": (1000, 300),
    "cold_starts": (5, 1),
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int
    warmup: int
    cold_starts: int
    concurrency: list[int]
    seed_workers: int
    dlops_env: dict[str, str]
    image: Path
    output: Path


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _is_mnist_sized(path: Path) -> bool:
    # The seed app feeds the decoded pixels straight to the model, so only a 28x28 grayscale
    # image gets a 200 from it; anything else would benchmark its error path.
    with Image.open(path) as image:
        return image.mode == "L" and image.size == (28, 28)


def default_image() -> Path:
    """A real MNIST digit from the test fixtures, a 3 when one can be told from the name."""
    candidates = [path for path in sorted(FIXTURES.glob("*.png")) if _is_mnist_sized(path)]
    if not candidates:
        raise SystemExit(f"no 28x28 grayscale PNG in {FIXTURES}/: pass --image PATH")
    threes = [p for p in candidates if re.search(r"(?<![0-9])3(?![0-9])|three", p.stem, re.I)]
    return (threes or candidates)[0]


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 1)")
    parser.add_argument(
        "--requests", type=int, help="requests per measurement (default 3000, quick 1000)"
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
    parser.add_argument("--seed-workers", type=int, default=1, help="uvicorn --workers (default 1)")
    parser.add_argument(
        "--dlops-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for bentoml serve, e.g. DLOPS_WORKERS=2 (repeatable)",
    )
    parser.add_argument("--image", type=Path, help="28x28 grayscale PNG (default: a fixture)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    counts = {
        name: getattr(args, name) if getattr(args, name) is not None else full_quick[args.quick]
        for name, full_quick in DEFAULTS.items()
    }
    if min(counts.values()) < 1 or min(args.concurrency) < 1 or args.seed_workers < 1:
        parser.error("counts, concurrencies and workers must be at least 1")
    if counts["requests"] < max(args.concurrency):
        parser.error("--requests must be at least the highest --concurrency")
    image = args.image or default_image()
    if not _is_mnist_sized(image):
        parser.error(f"{image} is not a 28x28 grayscale PNG, which the seed app needs")
    return Settings(
        **counts,
        concurrency=args.concurrency,
        seed_workers=args.seed_workers,
        dlops_env=dict(args.dlops_env),
        image=image.resolve(),
        output=args.output,
    )


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Start the servers one after the other (so they do not compete while starting); always stop
    them all, whatever happens in between."""
    try:
        for server in servers:
            server.start()
            server.wait_ready()
        yield
    except Exception:
        # The logs live in a temporary directory that is about to go: show why a server failed.
        for server in servers:
            log(f"last lines of {server.subject}'s log:\n{server.log_tail()}")
        raise
    finally:
        for server in servers:
            server.stop()


def _rotated(names: list[str], by: int) -> list[str]:
    # Rotating the order each round keeps either subject from always following the other.
    shift = by % len(names)
    return names[shift:] + names[:shift]


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def measure_load(
    settings: Settings, servers: dict[str, Server], hey: str, body: bytes, body_path: Path
) -> dict[str, Any]:
    """Answers, ceiling and load in alternating rounds, then memory; the servers are running."""
    answers = {name: post_once(f"{s.url}/predict", body) for name, s in servers.items()}
    log(f"answers: {answers}")
    if len({answer.get("label") for answer in answers.values()}) != 1:
        log("warning: the subjects disagree about the image; the figures compare different work")
    for name, server in servers.items():
        run_hey(hey, f"{server.url}/predict", body_path, settings.warmup, WARMUP_CONCURRENCY)
        log(f"warmed up {name}")
    png = settings.image.read_bytes()
    runs: list[dict[str, Any]] = []
    ceilings = []
    for round_index in range(settings.rounds):
        ceiling = measure_ceiling(png)
        ceilings.append(dataclasses.asdict(ceiling))
        log(
            f"round {round_index + 1}/{settings.rounds}: ceiling "
            f"{ceiling.single_images_per_s:,.0f} images/s single, "
            f"{ceiling.batched_images_per_s:,.0f} batched"
        )
        order = _rotated(list(servers), round_index)
        for concurrency in settings.concurrency:
            for name in order:
                url = f"{servers[name].url}/predict"
                result = run_hey(hey, url, body_path, settings.requests, concurrency)
                runs.append(
                    {"round": round_index + 1, "subject": name, **dataclasses.asdict(result)}
                )
                log(
                    f"round {round_index + 1} c={concurrency:<3} {name:<5} "
                    f"{result.rps:7.0f} rps  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms  non-200 {result.non_200}"
                    + (f" {result.statuses}" if result.non_200 else "")
                )
    memory = {
        name: [dataclasses.asdict(m) for m in server.memory()] for name, server in servers.items()
    }
    summary = report.summarise(runs, settings.concurrency)
    return {
        "answers": answers,
        "ceiling": {
            "batch": BATCH,
            "rounds": ceilings,
            "median": {key: statistics.median(c[key] for c in ceilings) for key in ceilings[0]},
        },
        "load": {"runs": runs, "summary": summary, "ratios": report.ratios(summary, runs)},
        "memory": memory,
    }


def measure_cold_starts(settings: Settings, home: Path, log_dir: Path) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"seed": [], "dlops": []}
    probes = {}
    starts = {
        "seed": lambda: seed_server(log_dir, settings.seed_workers),
        "dlops": lambda: dlops_server(home, log_dir, settings.dlops_env),
    }
    for index in range(settings.cold_starts):
        for name in _rotated(list(starts), index):
            server = starts[name]()
            probes[name] = server.ready_path
            try:
                server.start()
                samples[name].append(server.wait_ready())
            finally:
                server.stop()
            log(f"cold start {index + 1}/{settings.cold_starts} {name}: {samples[name][-1]:.2f} s")
    return {name: {"probe": probes[name], "samples_s": samples[name]} for name in samples}


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    # A plain `kill` must also run the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    hey = ensure_hey()
    machine = machine_info()  # after hey's install, which it reports on
    png = settings.image.read_bytes()
    body = multipart_body(png)
    with tempfile.TemporaryDirectory(prefix="dlops-bench-") as temporary:
        scratch = Path(temporary)
        body_path = scratch / "body.bin"
        body_path.write_bytes(body)
        home = scratch / "bentoml"
        log("importing the model into a temporary BentoML home")
        import_model(home)
        servers = {
            "seed": seed_server(scratch, settings.seed_workers),
            "dlops": dlops_server(home, scratch, settings.dlops_env),
        }
        with running(*servers.values()):
            log(", ".join(f"{name} at {server.url}" for name, server in servers.items()))
            measured = measure_load(settings, servers, hey, body, body_path)
        cold_start = measure_cold_starts(settings, home, scratch)
    data = {
        "command": shlex.join(
            ["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
        ),
        "settings": {
            **dataclasses.asdict(settings),
            "image": str(settings.image.relative_to(ROOT))
            if settings.image.is_relative_to(ROOT)
            else str(settings.image),
            "image_bytes": len(png),
            "image_sha256": hashlib.sha256(png).hexdigest(),
            "output": str(settings.output),
        },
        "machine": {**machine, "load_average_1m_at_end": os.getloadavg()[0]},
        **measured,
        "cold_start": cold_start,
        "image_size": container_image_size(),
        "wall_seconds": time.perf_counter() - started,
    }
    for path in report.write_all(settings.output, data):
        log(f"wrote {path}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # The servers were stopped on the way out; the traceback would only say where it was.
        raise SystemExit("bench: interrupted, servers stopped, no results written") from None
