"""The heavy model on a GPU: CUDA and TensorRT against the CPU, at batch 1, 8 and 64.

    python -m bench.gpu [--providers cpu,cuda,tensorrt] [--batches 1,8,64] [--seconds 3]
        [--entry DIR]

The device check of issue 20, prepared to run as one short script when a machine with a GPU is
lent (the `device` tool's `status` says whether one is): with onnxruntime-gpu in place of
onnxruntime (docs/configuration.md#execution-providers-openvino-gpus), on the orientation model
of the store (`make import` puts it there) or ``--entry``, fed the page `python -m
bench.orientation` sends, decoded and preprocessed once. For each provider, in this process:
dlops' own Classifier, loaded as ``DLOPS_PROVIDERS=<name>`` loads it (a provider that does not
load is reported with its reason, never measured as the CPU under its name), its answer checked
against the CPU's, then model calls of each batch size for ``--seconds`` each: images per second,
and the median and p99 of a call. The CPU provider gets every usable core as intra-op threads,
its best for one call. A provider's rate at batch N over its rate at batch 1 is what decides
adaptive batching for it (the issue's bar: 1.3x). Writes bench/results/gpu.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.floors import SpecModel
from bench.machine import machine_at_end, machine_info
from bench.orientation import GAIN_TARGET, PROBA_TOLERANCE, document_page
from bench.providers import store_entry
from bench.study import (
    RESULTS,
    command_line,
    fmt,
    listed_counts,
    listed_names,
    log,
    run_header,
    run_study,
    write_results,
)
from dlops import config
from dlops.model.spec import ModelSpec, load_spec
from dlops.pipeline.inference import Classifier

PROVIDERS = ("cpu", "cuda", "tensorrt")  # DLOPS_PROVIDERS' names; the first is the reference
BATCHES = (1, 8, 64)


def call_figures(seconds_per_call: list[float], images: int) -> dict[str, float]:
    """Images per second over all the calls, and the median and p99 of one call, in ms."""
    ordered = sorted(seconds_per_call)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "calls": len(ordered),
        "images_per_s": images * len(ordered) / sum(ordered),
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": p99 * 1e3,
    }


def timed_calls(classifier: Classifier, batch: np.ndarray, seconds: float) -> list[float]:
    """Model calls on ``batch`` for about ``seconds`` (at least 3), each call's seconds."""
    classifier.run(batch)  # a new shape: TensorRT builds its engine, CUDA its kernels
    durations: list[float] = []
    ends = time.perf_counter() + seconds
    while len(durations) < 3 or time.perf_counter() < ends:
        started = time.perf_counter()
        classifier.run(batch)
        durations.append(time.perf_counter() - started)
    return durations


def measure_provider(
    name: str,
    model_path: Path,
    spec: ModelSpec,
    example: np.ndarray,
    reference: np.ndarray | None,
    batches: tuple[int, ...],
    seconds: float,
) -> dict[str, Any]:
    """One provider: why it did not load or answered otherwise, or its figures by batch size
    (and its raw answer to ``example``, the reference for the next providers)."""
    threads = len(os.sched_getaffinity(0)) if name == "cpu" else 1
    try:
        classifier = Classifier(model_path, spec, threads, (config.PROVIDER_NAMES[name],))
    except Exception as error:  # the reason goes to the report, not a traceback
        return {"failure": f"did not load: {type(error).__name__}: {error}"}
    classifier.warm_up()
    answer = classifier.run(example[None])
    if reference is not None:
        gap = float(np.max(np.abs(answer - reference)))
        if gap > PROBA_TOLERANCE:
            return {"failure": f"answers {gap:.2e} away from the CPU's raw output"}
    figures = {}
    for size in batches:
        batch = np.ascontiguousarray(np.broadcast_to(example, (size, *example.shape)))
        log(f"{name}: batch {size}")
        figures[str(size)] = call_figures(timed_calls(classifier, batch, seconds), size)
    return {"in_use": list(classifier.providers), "answer": answer.tolist(), "batches": figures}


def report(data: dict[str, Any]) -> list[str]:
    lines = [
        "# The orientation model on each execution provider",
        "",
        *run_header(data),
        f"onnxruntime {data['onnxruntime']} (device {data['device']}); entry `{data['entry']}`; "
        f"{data['seconds']:g} s of calls per batch size, one process.",
        "",
        "| provider | batch | images/s | p50 ms per call | p99 ms per call | over the CPU "
        "| over its batch 1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    results = data["providers"]
    cpu = results.get("cpu", {}).get("batches", {})
    for name, result in results.items():
        if "failure" in result:
            continue
        first = result["batches"][str(data["batches"][0])]["images_per_s"]
        for size, row in result["batches"].items():
            over_cpu = row["images_per_s"] / cpu[size]["images_per_s"] if size in cpu else None
            lines.append(
                f"| {name} | {size} | {fmt(row['images_per_s'])} | {fmt(row['p50_ms'], 2)} "
                f"| {fmt(row['p99_ms'], 2)} | {fmt(over_cpu, 2)}× "
                f"| {fmt(row['images_per_s'] / first, 2)}× |"
            )
    lines.append("")
    for name, result in results.items():
        if "failure" in result:
            lines.append(f"- {name}: {result['failure']}")
        else:
            lines.append(f"- {name} ran on {', '.join(result['in_use'])}.")
    lines += [
        "",
        f"Adaptive batching pays on a provider whose rate at a larger batch is at least "
        f"{GAIN_TARGET}× its rate at batch 1 (the last column).",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=listed_names(config.PROVIDER_NAMES), default=PROVIDERS)
    parser.add_argument(
        "--batches", type=listed_counts("batch sizes such as 1,8,64"), default=BATCHES
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="of calls per batch size")
    parser.add_argument("--entry", type=Path, help="a model store entry (default: orientation)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import onnxruntime

    machine = machine_info()
    entry = (args.entry or store_entry("orientation")).resolve()
    spec = load_spec(entry)
    model_path = entry / config.MODEL_FILE_NAME
    example = SpecModel(model_path, spec).example(document_page())
    results: dict[str, dict[str, Any]] = {}
    reference = None
    for name in args.providers:
        log(f"{name}: loading")
        results[name] = measure_provider(
            name, model_path, spec, example, reference, args.batches, args.seconds
        )
        if reference is None and "answer" in results[name]:
            reference = np.array(results[name]["answer"])
    data = {
        "command": command_line("bench.gpu", argv),
        "onnxruntime": onnxruntime.__version__,
        "device": onnxruntime.get_device(),
        "entry": str(entry),
        "seconds": args.seconds,
        "batches": list(args.batches),
        "providers": results,
        "machine": machine_at_end(machine),
        "wall_seconds": time.perf_counter() - started,
    }
    for path in write_results(args.output, "gpu", data, report(data)):
        log(f"wrote {path}")


if __name__ == "__main__":
    run_study(main, "bench.gpu")
