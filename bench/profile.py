"""What stands between dlops and the floors: `python -m bench.profile [--py-spy PATH]`.

Two measurements of the digit request, servers pinned to one core and hey to the others
(bench/placement.py), all servers side by side:

1. **CPU per request.** Each server's process tree's CPU time (user + system, from /proc) over a
   run of hey at 16 clients, divided by the 200 answers: dlops, the lean floor and the HTTP floor
   of bench/floors.py (no access log), in alternating rounds, medians. Unlike rps this does not
   depend on how busy the load generator keeps the server.
2. **Where the time goes.** py-spy samples the dlops worker, then the lean floor, under the same
   load; each sample is put in the first stage whose function is on its stack (``STAGES``,
   innermost stages first), and a stage's share of the samples times the server's CPU per request
   is its cost in µs, side by side.
   py-spy is not a dependency of the service: pass ``--py-spy PATH`` or have it on PATH
   (``uv pip install py-spy``); without it only the first part runs.

Writes bench/results/profile.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench.load import default_image, ensure_hey, hey_argv, multipart_body, run_hey
from bench.machine import machine_at_end, machine_info
from bench.placement import pinned_to, place
from bench.report import DLOPS
from bench.servers import FLOOR, LEAN, Server, dlops_server, floor_servers, import_model, running
from bench.study import RESULTS, command_line, log, run_header, run_study, write_results

CONCURRENCY = 16
# (stage, functions that mark it): a sample belongs to the first stage with one of its
# functions on the stack, so the innermost work is listed before what calls it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("onnxruntime run", ("Session.run",)),
    ("pixels to an array (Pillow's array interface)", ("Image.__array_interface__",)),
    ("preprocessing (dlops: the MNIST fast-path test)", ("Preprocessor.__call__",)),
    ("decode (Pillow)", ("load_reduced", "open_image", "Image.convert", "open (PIL/Image.py")),
    ("metrics", ("PredictionMetrics.", "RouteMetrics.", "Core.metric_answers")),
    (
        "postprocessing and the answer's JSON",
        ("Postprocessor.", "Core.answer", "dumps", "DigitModel.answer"),
    ),
    ("dlops' core (placement, budget, batching)", ("Core.", "TurnBatch.")),
    ("reading the upload (body, multipart)", ("image_bytes", "_body", "_first_part")),
    ("writing the response (uvicorn, socket)", ("RequestResponseCycle.send",)),
    (
        "the app's ASGI code (dlops: route, deadline, drain, redirect)",
        (
            *("DirectRoute.", "DirectRoutes.", "RequestDeadline.", "GracefulDrain.", "InFlight."),
            *("RelativeRedirect.", "FlushBeforeScrape.", "(bench/floors.py"),
        ),
    ),
    (
        "uvicorn and httptools (parsing, tasks)",
        ("HttpToolsProtocol.", "RequestResponseCycle.", "ProxyHeadersMiddleware."),
    ),
)
OTHER = "event loop and the rest"


def stage_of(frames: list[str]) -> str:
    for stage, markers in STAGES:
        if any(marker in frame for frame in frames for marker in markers):
            return stage
    return OTHER


def stage_shares(raw: str) -> dict[str, float]:
    """py-spy's raw output (``frame;frame;... count`` per line) -> each stage's share."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return {stage: counts[stage] / total for stage, _ in (*STAGES, (OTHER, ()))} if total else {}


STAGE_SERIES = re.compile(
    r'^dlops_stage_duration_seconds_(sum|count)\{model="[^"]*",stage="(\w+)"\} (\S+)$', re.MULTILINE
)


def stage_totals(server: Server) -> dict[str, tuple[float, float]]:
    """dlops' own stage timers (dlops/metrics.py) as scraped now: stage -> (seconds, count)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, dict[str, float]] = {}
    for kind, stage, value in STAGE_SERIES.findall(text):
        totals.setdefault(stage, {})[kind] = float(value)
    return {stage: (values["sum"], values["count"]) for stage, values in totals.items()}


def timer_means_us(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Microseconds per observation of each stage between two scrapes."""
    means = {}
    for stage, (seconds, count) in after.items():
        earlier_seconds, earlier_count = before.get(stage, (0.0, 0.0))
        if count > earlier_count:
            means[stage] = (seconds - earlier_seconds) / (count - earlier_count) * 1e6
    return means


def profile(py_spy: str, server: Server, hey: str, body: Path, seconds: int, load_cpus: Any) -> str:
    """py-spy's raw samples of the server's serving process while hey keeps it busy."""
    load = subprocess.Popen(
        hey_argv(hey, server.url + "/predict", body, CONCURRENCY, duration=f"{seconds + 4}s"),
        stdout=subprocess.DEVNULL,
        preexec_fn=pinned_to(load_cpus),
    )
    try:
        time.sleep(2)
        with tempfile.NamedTemporaryFile(suffix=".txt") as output:
            subprocess.run(
                [
                    *(py_spy, "record", "-p", str(server.serving_pid()), "-d", str(seconds)),
                    *("-r", "400", "-f", "raw", "--nonblocking", "-o", output.name),
                ],
                check=True,
                capture_output=True,
                preexec_fn=pinned_to(load_cpus),
            )
            return Path(output.name).read_text()
    finally:
        load.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=10, help="py-spy's sampling time")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="path of py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    hey = ensure_hey()
    machine = machine_info()
    placement = place(1)
    cpus = placement.server
    with tempfile.TemporaryDirectory(prefix="dlops-profile-") as temporary:
        scratch = Path(temporary)
        body = scratch / "body.bin"
        body.write_bytes(multipart_body(default_image().read_bytes()))
        home = scratch / "bentoml"
        import_model(home)
        servers = {
            DLOPS: dlops_server(home, scratch, {"DLOPS_WORKERS": "1"}, cpus=cpus),
            **floor_servers(scratch, 1, cpus),
        }
        samples: dict[str, list[float]] = {name: [] for name in servers}
        timers: list[dict[str, float]] = []
        with running(*servers.values()):
            log(placement.note)
            for server in servers.values():
                run_hey(hey, server.url + "/predict", body, 1000, CONCURRENCY, cpus=placement.load)
            for round_index in range(args.rounds):
                for name, server in servers.items():
                    timed = stage_totals(server) if name == DLOPS else {}
                    before = server.cpu_seconds()
                    result = run_hey(
                        hey,
                        server.url + "/predict",
                        body,
                        args.requests,
                        CONCURRENCY,
                        cpus=placement.load,
                    )
                    if result.non_200:
                        raise RuntimeError(f"{name}: {result.statuses}")
                    per_request = (server.cpu_seconds() - before) / result.ok * 1e6
                    samples[name].append(per_request)
                    if name == DLOPS:
                        timers.append(timer_means_us(timed, stage_totals(server)))
                    log(f"round {round_index + 1} {name}: {per_request:.0f} µs CPU per request")
            shares = {
                name: stage_shares(
                    profile(args.py_spy, servers[name], hey, body, args.seconds, placement.load)
                )
                for name in (DLOPS, LEAN)
                if args.py_spy
            }
    cpu = {name: statistics.median(values) for name, values in samples.items()}
    data = {
        "command": command_line("bench.profile", argv),
        "machine": machine_at_end(machine),
        "placement": placement.note,
        "concurrency": CONCURRENCY,
        "cpu_us_per_request": cpu,
        "cpu_samples": samples,
        "stage_shares": shares,
        "dlops_timers_us": {
            stage: statistics.median(round_[stage] for round_ in timers if stage in round_)
            for stage in timers[0]
        },
        "wall_seconds": time.perf_counter() - started,
    }
    _, md_path = write_results(args.output, "profile", data, markdown(data))
    log(f"wrote {md_path}")


def markdown(data: dict[str, Any]) -> list[str]:
    cpu = data["cpu_us_per_request"]
    lines = [
        "# What stands between dlops and the floors: the digit request",
        "",
        *run_header(data),
        "",
        f"{data['placement']}; hey at {data['concurrency']} clients. CPU per request: the "
        "server tree's user + system time over the 200 answers of a run, median of the rounds.",
        "",
        "| server | CPU µs per request | requests per core-second |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {value:,.0f} | {1e6 / value:,.0f} |" for name, value in cpu.items()),
        "",
        f"dlops / lean, as the inverse of CPU per request: **{cpu[LEAN] / cpu[DLOPS]:.2f}×**; "
        f"dlops costs {cpu[DLOPS] - cpu[LEAN]:,.0f} µs a request more than lean, of which the "
        f"HTTP floor's {cpu[FLOOR]:,.0f} µs are common to both.",
        "",
    ]
    timers = data["dlops_timers_us"]
    lines += [
        "dlops' own stage timers over the same runs (wall time in the worker, "
        "`dlops_stage_duration_seconds`: decode and preprocess per image, infer per model call, "
        "which carries several images under load): "
        + ", ".join(f"{stage} {value:,.0f} µs" for stage, value in timers.items())
        + ". `infer` includes the sigmoid.",
        "",
    ]
    shares = data["stage_shares"]
    if not shares:
        return [*lines, "No profile: py-spy was not found (`--py-spy PATH`)."]
    lines += [
        "## Where the time goes (py-spy, the serving process's samples by stage)",
        "",
        f"| stage | {DLOPS} share | {DLOPS} ≈ µs | {LEAN} share | {LEAN} ≈ µs "
        f"| {DLOPS} − {LEAN} µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage in shares[DLOPS]:
        mine, theirs = shares[DLOPS][stage], shares[LEAN][stage]
        lines.append(
            f"| {stage} | {mine:.1%} | {mine * cpu[DLOPS]:,.0f} | {theirs:.1%} "
            f"| {theirs * cpu[LEAN]:,.0f} | {mine * cpu[DLOPS] - theirs * cpu[LEAN]:+,.0f} |"
        )
    lines += [
        "",
        "A sample goes to the first stage in this order with a function on its stack; µs are "
        "a stage's share of the server's CPU per request, so the kernel's share of a request "
        "(socket work, which py-spy does not see) is spread over the stages in proportion. "
        "py-spy's samples put more of dlops' time in onnxruntime than dlops' own `infer` timer "
        "measures: read the stage estimates as shares, and the timers as the measurement.",
    ]
    return lines


if __name__ == "__main__":
    run_study(main)
