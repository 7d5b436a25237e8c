"""Soak: does the serving tree's memory keep growing under sustained load? `python -m bench.soak`.

Every subject is a `bentoml serve` process tree: dlops as `make serve` starts it, the stock
BentoML service of bench/stock_service.py, and variants of stock that each remove one suspect of
its growth (the temporary file per upload, Prometheus' multiprocess metrics, glibc's malloc
arenas, Python's small-object allocator, the request timeout) or trace its Python allocations.
All servers run side by side; each subject in turn gets a warm-up, then its whole soak in one
stretch: hey POSTs the same digit to /predict at 64 concurrent connections in chunks, back to
back, and after every chunk the resident memory of every process of the tree is sampled (the
workers leave the arbiter's process group, so the tree is walked by parent links). Growth is the
whole tree's RSS at the end over its RSS after the warm-up. Writes bench/results/soak.{json,md}.

The load is not interleaved between subjects (as bench/run.py does for throughput): stock holds
each request's context for its 60 s request timeout, so a subject left idle between chunks gives
that memory back and its growth would not show.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import default_image, ensure_hey, multipart_body, post_once, run_hey
from bench.machine import machine_info
from bench.servers import (
    ROOT,
    Server,
    dlops_server,
    import_model,
    running,
    stock_server,
    throwaway_home,
)
from bench.study import (
    RESULTS,
    command_line,
    fmt,
    log,
    machine_line,
    quick_or_full,
    run_study,
    write_results,
)

STEM = "soak"
GROWTH_LIMIT = 0.15  # the issue's bound on the tree's RSS growth after the warm-up
WARMUP = 2000
CONCURRENCY = 64
# (full, --quick): the full run is the issue's 20 000 requests; quick shows the trend in minutes.
DEFAULTS = {"requests": (20_000, 4_000), "sample_every": (2_000, 1_000)}
TRACEMALLOC_ROUTE = "/tracemalloc"
TRACEMALLOC_SHOWN = 12


@dataclass(frozen=True)
class Variant:
    """One subject of the soak: which service, with what environment, and what that isolates."""

    name: str
    service: str  # "dlops" or "stock"
    env: dict[str, str]
    what: str
    max_requests: int | None = None  # for a variant too slow to get the full soak


VARIANTS = (
    Variant("dlops", "dlops", {}, "dlops as `make serve` starts it (default settings)"),
    Variant(
        "stock",
        "stock",
        {},
        "bench/stock_service.py as BentoML's examples write it: the upload as a `Path` "
        "(a temporary file per request), metrics on, glibc's malloc",
    ),
    Variant(
        "stock, image upload",
        "stock",
        {"STOCK_UPLOAD": "image"},
        "the upload as a `PIL.Image.Image`, opened in memory: no temporary file",
    ),
    Variant(
        "stock, metrics off",
        "stock",
        {"STOCK_METRICS": "0"},
        "BentoML's Prometheus metrics off (`metrics: enabled: false`)",
    ),
    Variant(
        "stock, MALLOC_ARENA_MAX=2",
        "stock",
        {"MALLOC_ARENA_MAX": "2"},
        "glibc's malloc limited to 2 arenas (default 8 per core)",
    ),
    Variant(
        "stock, PYTHONMALLOC=malloc",
        "stock",
        {"PYTHONMALLOC": "malloc"},
        "Python's small-object allocator off: every Python object comes from glibc's malloc",
    ),
    Variant(
        "stock, timeout 2 s",
        "stock",
        {"STOCK_TIMEOUT": "2"},
        "the request timeout (`traffic: timeout`) 2 s instead of BentoML's default 60 s",
    ),
    Variant(
        "stock, timer cancelled",
        "stock",
        {"STOCK_CANCEL_TIMER": "1"},
        "BentoML's `TimeoutMiddleware` patched to cancel its per-request timer when the answer "
        "has gone (the timeout itself unchanged: 60 s)",
    ),
    Variant(
        "stock, tracemalloc",
        "stock",
        {"STOCK_TRACEMALLOC": "1"},
        "Python's allocations traced, to see where the heap grows (tracing makes the worker "
        "several times slower: at most 6 144 requests)",
        max_requests=6144,
    ),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


@dataclass(frozen=True)
class Settings:
    requests: int
    warmup: int
    concurrency: int
    sample_every: int
    subjects: list[str]
    image: Path
    output: Path

    def whole_batches(self, requests: int) -> int:
        # hey sends concurrency x (n // concurrency) requests: round up so at least n are sent.
        return math.ceil(requests / self.concurrency) * self.concurrency

    @property
    def chunk(self) -> int:
        return self.whole_batches(self.sample_every)

    def chunks(self, variant: Variant) -> int:
        requests = min(self.requests, variant.max_requests or self.requests)
        return math.ceil(requests / self.chunk)


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 000 requests instead of 20 000")
    parser.add_argument("--requests", type=int, help="requests after the warm-up (default 20000)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help=f"default {WARMUP}")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help=f"connections (default {CONCURRENCY})"
    )
    parser.add_argument(
        "--sample-every", type=int, help="requests between memory samples (default 2000)"
    )
    parser.add_argument(
        "--subjects",
        nargs="+",
        choices=list(BY_NAME),
        default=list(BY_NAME),
        metavar="NAME",
        help="which subjects (default all): " + ", ".join(repr(name) for name in BY_NAME),
    )
    parser.add_argument("--image", type=Path, help="the PNG to POST (default: a fixture 3)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    counts = quick_or_full(args, DEFAULTS)
    if min(*counts.values(), args.warmup, args.concurrency) < 1:
        parser.error("counts and concurrency must be at least 1")
    if min(counts["sample_every"], args.warmup) < args.concurrency:
        parser.error("--sample-every and --warmup must be at least --concurrency")
    return Settings(
        **counts,
        warmup=args.warmup,
        concurrency=args.concurrency,
        subjects=list(dict.fromkeys(args.subjects)),
        image=(args.image or default_image()).resolve(),
        output=args.output,
    )


def _directory_usage(path: Path) -> dict[str, int]:
    """Files and bytes under ``path``: temporary uploads left behind, metrics files."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


@dataclass
class Subject:
    """A running variant: its server, where its files go, and what it has been through."""

    variant: Variant
    server: Server
    home: Path
    temp_dir: Path
    warmup_statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    statuses: Counter[str] = dataclasses.field(default_factory=Counter)
    sent: int = 0
    seconds: float = 0.0
    samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    traces: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def sample(self, phase: str, requests: int) -> dict[str, Any]:
        processes = [dataclasses.asdict(p) for p in self.server.samples()]
        entry = {
            "phase": phase,
            "requests_after_warmup": requests,
            "tree_rss_mib": sum(p["rss_mib"] for p in processes),
            "processes": processes,
            "temp_files": _directory_usage(self.temp_dir),
            "metrics_files": _directory_usage(self.home / "prometheus_multiproc_dir"),
        }
        self.samples.append(entry)
        return entry

    def trace(self, phase: str) -> None:
        """tracemalloc's growth since the previous call, from the tracing variant's worker."""
        if self.variant.env.get("STOCK_TRACEMALLOC") != "1":
            return
        request = urllib.request.Request(
            self.server.url + TRACEMALLOC_ROUTE,
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            self.traces.append({"phase": phase, **json.loads(response.read())})


def make_subject(variant: Variant, base_home: Path, scratch: Path) -> Subject:
    # TMPDIR of its own: the temporary files BentoML writes for uploads can be counted.
    slug = "".join(c if c.isalnum() else "-" for c in variant.name)
    home = throwaway_home(base_home, scratch, slug)
    temp_dir = scratch / f"tmp-{slug}"
    temp_dir.mkdir()
    env = {**variant.env, "TMPDIR": str(temp_dir)}
    factory = dlops_server if variant.service == "dlops" else stock_server
    return Subject(variant, factory(home, scratch, env), home, temp_dir)


def _load(subject: Subject, hey: str, body_path: Path, requests: int, concurrency: int) -> None:
    result = run_hey(hey, subject.server.url + "/predict", body_path, requests, concurrency)
    subject.statuses.update(result.statuses)
    subject.sent += result.sent
    subject.seconds += result.duration_s


def _workers(sample: dict[str, Any]) -> list[int]:
    return sorted(p["pid"] for p in sample["processes"] if p["role"] == "worker")


def summarise(subject: Subject) -> dict[str, Any]:
    """Growth after the warm-up, per tree and per process, and whether any worker was replaced."""
    start, warm, end = subject.samples[0], subject.samples[1], subject.samples[-1]
    warm_by_pid = {p["pid"]: p for p in warm["processes"]}
    processes = []
    for process in end["processes"]:
        before = warm_by_pid.get(process["pid"])
        processes.append(
            {
                "pid": process["pid"],
                "role": process["role"],
                **{
                    f"{field}_{when}": sample[field]
                    for field in ("rss_mib", "anon_mib", "file_mib", "threads", "open_files")
                    for when, sample in (("after_warmup", before or {}), ("end", process))
                    if field in sample
                },
                "rss_growth": process["rss_mib"] / before["rss_mib"] - 1 if before else None,
            }
        )
    ok = subject.statuses.get("200", 0)
    return {
        "subject": subject.variant.name,
        "what": subject.variant.what,
        "env": subject.variant.env,
        "sent_after_warmup": subject.sent,
        "ok": ok,
        "all_200": ok == subject.sent,
        "statuses": dict(sorted(subject.statuses.items())),
        "warmup_statuses": subject.warmup_statuses,
        "rps": ok / subject.seconds if subject.seconds else 0.0,
        "tree_rss_start_mib": start["tree_rss_mib"],
        "tree_rss_after_warmup_mib": warm["tree_rss_mib"],
        "tree_rss_end_mib": end["tree_rss_mib"],
        "growth": end["tree_rss_mib"] / warm["tree_rss_mib"] - 1,
        "within_limit": end["tree_rss_mib"] <= warm["tree_rss_mib"] * (1 + GROWTH_LIMIT),
        "workers_after_warmup": _workers(warm),
        "workers_end": _workers(end),
        "worker_replaced": _workers(warm) != _workers(end),
        "processes": processes,
        "temp_files_end": end["temp_files"],
        "metrics_files_end": end["metrics_files"],
    }


def soak(settings: Settings, subjects: list[Subject], hey: str, body_path: Path) -> None:
    answers = {
        s.variant.name: post_once(s.server.url + "/predict", body_path.read_bytes())
        for s in subjects
    }
    log(f"answers: {answers}")
    if len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) != 1:
        raise RuntimeError(f"the subjects answer the same image differently: {answers}")
    for subject in subjects:
        subject.sample("start", 0)
        # The warm-up's statuses are kept too: an error there would be hidden otherwise.
        _load(
            subject, hey, body_path, settings.whole_batches(settings.warmup), settings.concurrency
        )
        subject.warmup_statuses = dict(subject.statuses)
        subject.statuses.clear()
        subject.sent, subject.seconds = 0, 0.0
        subject.trace("after warm-up")
        entry = subject.sample("after warm-up", 0)
        log(
            f"{subject.variant.name}: warm-up {subject.warmup_statuses}, tree RSS "
            f"{entry['tree_rss_mib']:.1f} MiB"
        )
        for _ in range(settings.chunks(subject.variant)):
            _load(subject, hey, body_path, settings.chunk, settings.concurrency)
            entry = subject.sample("load", subject.sent)
            log(
                f"{subject.variant.name:<28} {subject.sent:>6} requests  tree RSS "
                f"{entry['tree_rss_mib']:6.1f} MiB  statuses {dict(subject.statuses)}"
            )
        subject.trace("end")


def _percent(value: float) -> str:
    return f"{value:+.1%}"


def _statuses(summary: dict[str, Any]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in summary["statuses"].items())


def _summary_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | what differs | requests after warm-up | statuses | tree RSS MiB: start "
        "/ after warm-up / end | growth after warm-up | worker replaced | rps |",
        "| --- | --- | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for row in data["summaries"]:
        lines.append(
            f"| {row['subject']} | {row['what']} | {row['sent_after_warmup']:,} | {_statuses(row)} "
            f"| {fmt(row['tree_rss_start_mib'])} / {fmt(row['tree_rss_after_warmup_mib'])} / "
            f"{fmt(row['tree_rss_end_mib'])} | **{_percent(row['growth'])}** "
            f"| {'yes' if row['worker_replaced'] else 'no'} | {row['rps']:,.0f} |"
        )
    return lines


def _over_time_table(data: dict[str, Any]) -> list[str]:
    names = [row["subject"] for row in data["summaries"]]
    lines = [
        "| requests after warm-up | " + " | ".join(names) + " |",
        "| ---: |" + " ---: |" * len(names),
    ]
    series = {entry["subject"]: entry["samples"] for entry in data["subjects"]}
    # Row 0 is the sample after the warm-up; the start sample is in the summary table.
    longest = max(names, key=lambda name: len(series[name]))
    for position in range(1, len(series[longest])):
        cells = [
            fmt(series[name][position]["tree_rss_mib"]) if position < len(series[name]) else ""
            for name in names
        ]
        requests = series[longest][position]["requests_after_warmup"]
        lines.append(f"| {requests:,} | " + " | ".join(cells) + " |")
    return lines


def _process_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | process | pid | RSS MiB after warm-up → end | growth | of which anonymous "
        "MiB | of which file-backed MiB | threads | open fds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in data["summaries"]:
        for process in row["processes"]:
            if process["rss_growth"] is None:
                lines.append(
                    f"| {row['subject']} | {process['role']} | {process['pid']} "
                    f"| (new) → {fmt(process['rss_mib_end'])} | | | | | |"
                )
                continue
            lines.append(
                f"| {row['subject']} | {process['role']} | {process['pid']} "
                f"| {fmt(process['rss_mib_after_warmup'])} → {fmt(process['rss_mib_end'])} "
                f"| {_percent(process['rss_growth'])} "
                f"| {fmt(process['anon_mib_after_warmup'])} → {fmt(process['anon_mib_end'])} "
                f"| {fmt(process['file_mib_after_warmup'])} → {fmt(process['file_mib_end'])} "
                f"| {process['threads_after_warmup']} → {process['threads_end']} "
                f"| {process['open_files_after_warmup']} → {process['open_files_end']} |"
            )
    return lines


def _files_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | temporary files left (TMPDIR) | Prometheus multiprocess files |",
        "| --- | ---: | ---: |",
    ]
    for row in data["summaries"]:
        temp, metrics = row["temp_files_end"], row["metrics_files_end"]
        lines.append(
            f"| {row['subject']} | {temp['files']} ({temp['bytes']:,} bytes) "
            f"| {metrics['files']} ({metrics['bytes']:,} bytes) |"
        )
    return lines


def _trace_section(data: dict[str, Any]) -> list[str]:
    traced = [entry for entry in data["subjects"] if entry["traces"]]
    lines: list[str] = []
    for entry in traced:
        first, last = entry["traces"][0], entry["traces"][-1]
        lines += [
            f"{entry['subject']}: Python's traced heap {fmt(first['traced_bytes'] / 2**20)} MiB "
            f"after the warm-up, {fmt(last['traced_bytes'] / 2**20)} MiB at the end, both "
            f"right after `gc.collect()` (which found {last['gc_collected']:,} unreachable "
            "objects at the end): what grew is alive, not garbage. Where it grew most "
            "(allocations alive at the end minus those after the warm-up, by traceback, "
            "innermost frame last):",
            "",
            "| size change | count change | traceback |",
            "| ---: | ---: | --- |",
        ]
        for stat in last["top"][:TRACEMALLOC_SHOWN]:
            frames = "<br>".join(
                f"`{frame.replace(str(ROOT) + '/', '').split('site-packages/')[-1]}`"
                for frame in reversed(stat["traceback"])
            )
            lines.append(
                f"| {stat['size_diff'] / 1024:+,.1f} KiB | {stat['count_diff']:+,} | {frames} |"
            )
        lines.append("")
    return lines


def _reading(data: dict[str, Any]) -> list[str]:
    """Each subject against the bound, and each stock variant's growth beside stock's: a suspect
    that explains the growth is one whose removal takes most of it away."""
    rows = {row["subject"]: row for row in data["summaries"]}
    stock = rows.get("stock")
    lines = []
    for name, row in rows.items():
        grown = row["tree_rss_end_mib"] - row["tree_rss_after_warmup_mib"]
        line = (
            f"- {name}: {_percent(row['growth'])} after the warm-up ({grown:+,.1f} MiB), "
            + ("within" if row["within_limit"] else "**beyond**")
            + f" the {GROWTH_LIMIT:.0%} bound; "
            + ("every answer 200" if row["all_200"] else f"**not all 200**: {_statuses(row)}")
        )
        stock_grown = (
            stock["tree_rss_end_mib"] - stock["tree_rss_after_warmup_mib"] if stock else 0.0
        )
        variant = BY_NAME.get(name)
        if stock and name != "stock" and variant and variant.service == "stock" and stock_grown:
            comparable = row["sent_after_warmup"] == stock["sent_after_warmup"]
            line += (
                f"; {grown / stock_grown - 1:+.0%} against stock's growth over the same "
                f"requests ({stock_grown:+,.1f} MiB)"
                if comparable
                else f" (over {row['sent_after_warmup']:,} requests, not comparable with stock's "
                f"{stock['sent_after_warmup']:,})"
            )
        lines.append(line + ".")
    return lines


def markdown(data: dict[str, Any]) -> list[str]:
    settings, machine = data["settings"], data["machine"]
    lines = [
        "# Soak: memory of the serving tree under sustained load",
        "",
        f"`{data['command']}` on {machine['date']}, {data['wall_seconds']:.0f} s wall time.",
        f"{machine_line(machine)}. 1-minute load average {machine['load_average_1m_at_start']:.2f} "
        f"at the start, {data['load_average_1m_at_end']:.2f} at the end (shared machine).",
        "",
        f"Load: hey POSTs `{settings['image']}` as the multipart field `file` to `/predict` at "
        f"{settings['concurrency']} concurrent connections: {settings['warmup_sent']:,} warm-up "
        f"requests, then chunks of {settings['chunk']:,} requests back to back, "
        f"{settings['requests']:,} requests or more per subject (fewer where noted). All servers "
        "run side by side; each subject gets its warm-up and soak in one stretch, one subject "
        "after the other (stock holds each request's context for its 60 s request timeout, so "
        "pauses between chunks would hide its growth). After every chunk the "
        "RSS of every process of the tree (arbiter and workers, found by walking the children: "
        "the workers leave the arbiter's process group) is sampled. Growth = tree RSS at the end "
        f"/ tree RSS after the warm-up - 1; the bound is {GROWTH_LIMIT:.0%}. Each server has its "
        "own BENTOML_HOME (a copy of the same model store) and TMPDIR.",
        "",
        "## Summary",
        "",
        *_summary_table(data),
        "",
        *_reading(data),
        "",
        "## Tree RSS (MiB) after every chunk",
        "",
        *_over_time_table(data),
        "",
        "## Per process: after the warm-up → the end",
        "",
        "Anonymous memory is the heaps (Python's and the C libraries'); file-backed is mapped "
        "files (libraries, the model, Prometheus' multiprocess `.db` files).",
        "",
        *_process_table(data),
        "",
        "## Files at the end",
        "",
        *_files_table(data),
        "",
    ]
    traces = _trace_section(data)
    if traces:
        lines += ["## Python allocations (tracemalloc)", "", *traces]
    return lines


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    started = time.perf_counter()
    hey = ensure_hey()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="dlops-soak-") as temporary:
        scratch = Path(temporary)
        body_path = scratch / "body.bin"
        body_path.write_bytes(multipart_body(settings.image.read_bytes()))
        base_home = scratch / "bentoml"
        log("importing the model into a temporary BentoML home")
        import_model(base_home)
        subjects = [make_subject(BY_NAME[name], base_home, scratch) for name in settings.subjects]
        with running(*(subject.server for subject in subjects)):
            log(", ".join(f"{s.variant.name} at {s.server.url}" for s in subjects))
            soak(settings, subjects, hey, body_path)
    summaries = [summarise(subject) for subject in subjects]
    data = {
        "command": command_line("bench.soak", argv),
        "settings": {
            **dataclasses.asdict(settings),
            "chunk": settings.chunk,
            "warmup_sent": settings.whole_batches(settings.warmup),
            "image": str(settings.image.relative_to(ROOT))
            if settings.image.is_relative_to(ROOT)
            else str(settings.image),
            "output": str(settings.output),
            "growth_limit": GROWTH_LIMIT,
        },
        "machine": machine,
        "load_average_1m_at_end": os.getloadavg()[0],
        "summaries": summaries,
        "subjects": [
            {"subject": s.variant.name, "samples": s.samples, "traces": s.traces} for s in subjects
        ],
        "wall_seconds": time.perf_counter() - started,
    }
    json_path, markdown_path = write_results(settings.output, STEM, data, markdown(data))
    for row in summaries:
        log(
            f"{row['subject']:<28} growth {_percent(row['growth'])}  "
            f"{row['ok']:,}/{row['sent_after_warmup']:,} answered 200"
        )
    log(f"wrote {json_path} and {markdown_path}")


if __name__ == "__main__":
    run_study(main, "soak")
