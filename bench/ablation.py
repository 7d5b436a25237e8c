"""What each part of dlops' digit request costs where it runs: `python -m bench.ablation`.

The served ASGI app, built as `bentoml serve` builds it (``bentoml.load`` and ``to_asgi``), is
called in one process with the digit upload of ``make bench``: no sockets and no uvicorn, which
both apps would share. Beside it, bench/floors.py's lean app. Then the same dlops app with one part
of its work taken out at a time (``PARTS``), and with all of them out: the difference from the
whole app is what that part costs a request with everything else around it. Timed alone, in a
loop of its own, a part costs several times less: its code and data then stay in the caches,
which a request's decode, inference and HTTP work keep evicting.

Each subject runs in a child process of its own, pinned to one core, for ``--repeats`` runs of
``--requests`` requests after a warm-up; the figure is the median run, then the median over
``--rounds`` rounds of every subject in rotated order. Writes bench/results/ablation.{json,md}.
A part taken out changes no answer but the postprocessing's (logits, not probabilities).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import default_image, multipart_body
from bench.machine import machine_at_end, machine_info
from bench.placement import pinned_to, place
from bench.servers import ROOT, dlops_env, import_model
from bench.study import RESULTS, command_line, log, run_header, run_study, write_results

DLOPS, LEAN = "dlops", "lean"
WARM_UP_REQUESTS = 2000
# dlops loads its model on a thread; a subject waits this long for its first answer.
READY_SECONDS = 60


def _replace(owner: Any, name: str, value: Any) -> None:
    """``owner.name = value``, refused when ``owner`` has no ``name``: a part whose target has
    moved must fail, not leave the app whole and report a saving of nothing."""
    if not hasattr(owner, name):
        raise AttributeError(f"{owner!r} has no {name!r} to take out: update bench/ablation.py")
    setattr(owner, name, value)


def without_digit_check() -> None:
    import numpy as np

    from dlops.pipeline.preprocess import digit

    # The upload is an MNIST digit already: the fast path's test passes, its pixels are the answer.
    _replace(digit, "to_mnist_digit", lambda image, size=digit.MNIST_SIZE: np.array(image))


def without_decode_planning() -> None:
    from dlops.pipeline.core import Core

    def prepare(self: Core, file: bytes, image: Any = None, abandoned: Any = None) -> Any:
        image = image or self.open(file)
        image.load()
        return self.preprocessor(image)

    _replace(Core, "prepare", prepare)


def without_metrics() -> None:
    from dlops.metrics import PredictionMetrics, RouteMetrics
    from dlops.pipeline.core import Core

    _replace(PredictionMetrics, "prepared", lambda self, *_: None)
    _replace(PredictionMetrics, "inferred", lambda self, *_: None)
    _replace(RouteMetrics, "observe", lambda self, *_: None)
    _replace(Core, "metric_answers", lambda self, probabilities: ((), ()))


def without_deadline() -> None:
    from dlops.http import direct_route

    _replace(direct_route, "RequestDeadline", lambda app, timeout, bodies: app)


def without_postprocessing() -> None:
    from dlops.pipeline.postprocess import Postprocessor

    _replace(Postprocessor, "probabilities", lambda self, raw: raw)


# (what is taken out, how): each is dlops' own work that the lean floor does not do.
PARTS: dict[str, tuple[str, Callable[[], None]]] = {
    "digit check": (
        "the MNIST fast path's test (Pillow's bounding box and extrema, the centre of mass)",
        without_digit_check,
    ),
    "decode planning": (
        "planning the decode (reduction, memory cost, the budget) and the stage timers' clock",
        without_decode_planning,
    ),
    "metrics": (
        "the per-image stage timers, the answers' histograms and the route's counters",
        without_metrics,
    ),
    "deadline": ("the request deadline and the body allowance (408/503)", without_deadline),
    "postprocessing": ("the sigmoid, as an array of probabilities", without_postprocessing),
}
ALL_OUT = "all of them"


def subjects() -> list[str]:
    return [DLOPS, *PARTS, ALL_OUT, LEAN]


def _scope(content_type: bytes, length: int) -> dict[str, Any]:
    headers = [(b"host", b"localhost"), (b"content-type", content_type)]
    headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 3000),
        "state": {},
    }


async def _started(app: Any) -> None:
    """ASGI lifespan startup: BentoML creates the service instance, which loads the model."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    lifespan = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    app_task = asyncio.create_task(app(lifespan, queue.get, send))
    while not sent and not app_task.done():
        await asyncio.sleep(0.01)
    if not sent or sent[0]["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {sent}")


async def _measure(subject: str, requests: int, repeats: int) -> dict[str, Any]:
    body = multipart_body(default_image().read_bytes())
    content_type = b"multipart/form-data; boundary=" + body.split(b"\r\n")[0][2:]
    if subject == LEAN:
        from bench.floors import lean as app
    else:
        taken_out = list(PARTS) if subject == ALL_OUT else [subject] if subject in PARTS else []
        for name in taken_out:
            _, take_out = PARTS[name]
            take_out()
        import bentoml

        app = bentoml.load(str(ROOT)).to_asgi()
        await _started(app)

    async def request() -> tuple[int, bytes]:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(_scope(content_type, len(body)), receive, send)
        return sent[0]["status"], sent[-1]["body"]

    deadline = time.monotonic() + READY_SECONDS
    status, answer = await request()
    while status != 200 and time.monotonic() < deadline:  # the model is still loading
        await asyncio.sleep(0.05)
        status, answer = await request()
    if status != 200:
        raise RuntimeError(f"{subject}: {status} {answer[:200]!r}")
    for _ in range(WARM_UP_REQUESTS):
        await request()
    gc.collect()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(requests):
            await request()
        runs.append((time.perf_counter() - started) / requests * 1e6)
    return {"us_per_request": statistics.median(runs), "runs": runs, "answer": answer.decode()}


def run_child(subject: str, home: Path, requests: int, repeats: int, cpus: Any) -> dict[str, Any]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "bench.ablation", "--child", subject),
            *("--requests", str(requests), "--repeats", str(repeats)),
        ],
        cwd=ROOT,
        env=dlops_env(home, {"DLOPS_WORKERS": "1"}),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=pinned_to(cpus),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{subject} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per subject and round")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=subjects(), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(asyncio.run(_measure(args.child, args.requests, args.repeats))))
        return
    started = time.perf_counter()
    machine = machine_info()
    placement = place(1)
    order = subjects()
    figures: dict[str, list[float]] = {subject: [] for subject in order}
    answers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dlops-ablation-") as temporary:
        home = Path(temporary) / "bentoml"
        import_model(home)
        for round_index in range(args.rounds):
            shift = round_index % len(order)
            for subject in order[shift:] + order[:shift]:
                result = run_child(subject, home, args.requests, args.repeats, placement.server)
                figures[subject].append(result["us_per_request"])
                answers[subject] = result["answer"]
                log(f"round {round_index + 1} {subject}: {result['us_per_request']:.1f} µs")
    data = {
        "command": command_line("bench.ablation", argv),
        "machine": machine_at_end(machine),
        "cpus": placement.server,
        "requests": args.requests,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "us_per_request": {
            subject: statistics.median(values) for subject, values in figures.items()
        },
        "samples": figures,
        "answers": answers,
        "wall_seconds": time.perf_counter() - started,
    }
    _, md_path = write_results(args.output, "ablation", data, markdown(data))
    log(f"wrote {md_path}")


def markdown(data: dict[str, Any]) -> list[str]:
    cost = data["us_per_request"]
    whole, lean = cost[DLOPS], cost[LEAN]
    lines = [
        "# What each part of dlops' digit request costs where it runs",
        "",
        *run_header(data),
        "",
        f"In one process pinned to CPU {', '.join(map(str, data['cpus'] or ['(unpinned)']))}: "
        "POST /predict "
        "with the digit upload of `make bench`, to the served ASGI app (no sockets, no uvicorn), "
        f"{data['repeats']} runs of {data['requests']:,} requests per subject and round, median "
        f"run, then median of {data['rounds']} rotated rounds. Each row takes one part of "
        "dlops' work out of the whole app.",
        "",
        "| subject | µs per request | saved against dlops | requests per core-second |",
        "| --- | ---: | ---: | ---: |",
        f"| **dlops** | {whole:,.1f} | | {1e6 / whole:,.0f} |",
    ]
    taken_out = [(name, what) for name, (what, _) in PARTS.items()] + [(ALL_OUT, ALL_OUT)]
    for name, what in taken_out:
        lines.append(
            f"| without {what} | {cost[name]:,.1f} | {whole - cost[name]:+,.1f} "
            f"| {1e6 / cost[name]:,.0f} |"
        )
    lines += [
        f"| **lean** (bench/floors.py) | {lean:,.1f} | | {1e6 / lean:,.0f} |",
        "",
        f"dlops / lean in this process, as the inverse of the time per request: "
        f"**{lean / whole:.2f}×**; without {ALL_OUT}: {lean / cost[ALL_OUT]:.2f}×. The parts' "
        f"savings one at a time add up to {sum(whole - cost[name] for name in PARTS):,.1f} µs, "
        f"all of them at once save {whole - cost[ALL_OUT]:,.1f} µs.",
    ]
    return lines


if __name__ == "__main__":
    run_study(main, "bench.ablation")
