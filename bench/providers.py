"""OpenVINO against onnxruntime's default CPU provider, in this process, with dlops' own Classifier.

    .venv-peers/openvino/bin/python -m bench.providers [--quick] [--rounds N]
        [--entry DIR ...] [--image FILE]

from the repository root, in a venv of its own, because ``onnxruntime-openvino`` replaces the
``onnxruntime`` package (requirements/peers/openvino.in says what else it holds):

    .venv/bin/uv venv --python python3.11 .venv-peers/openvino
    .venv/bin/uv pip install --python .venv-peers/openvino/bin/python \\
        -r requirements/peers/openvino.txt

Subjects: dlops' ``Classifier`` (dlops/pipeline/inference.py) on a stored model, once with
``DLOPS_PROVIDERS=cpu`` and once with ``DLOPS_PROVIDERS=openvino`` (dlops.config's names; OpenVINO's
default device, its CPU plugin). Models: ``--entry`` model store entries (a directory with
model.onnx and the spec.json dlops stored), by default the latest ``orientation`` (fed a
~2 MP phone-photo-like page, bench/orientation.py's upload) and ``binary_classifier_3`` (fed
bench/load.py's MNIST 3) of the store at ``$BENTOML_HOME`` (default ./.bentoml, the Makefile's).

Settings, each in a fresh process pinned to its cores (a thread pool keeps the cores it was
created on, so one process cannot serve two settings):

- intra-op 1 thread on 1 core: a worker per core, dlops' default deployment;
- intra-op 2 threads on 2 cores: one worker given both;
- intra-op 1 thread on 2 cores: ``DLOPS_INTRA_OP_THREADS=1`` unpinned. OpenVINO's CPU plugin
  ignores onnxruntime's ``intra_op_num_threads`` and would size its own pool from every core it
  may use; dlops passes the setting on as OpenVINO's ``num_of_threads``
  (dlops/pipeline/inference.py's ``provider_options``), and the "cores busy" column (CPU time
  over wall time) shows whether it holds.

In each setting, per model: both classifiers are loaded and warmed (``Classifier.warm_up``), the
first call at a batch size not seen before is timed (OpenVINO compiles the graph for each new
input shape), and both answer the upload at every batch size within ``PROBA_TOLERANCE`` with the
same labels, or the study stops before measuring. Then alternating rounds, the providers' order
swapped each round: inference per image at batch 1 and 8 (the upload's example repeated), the
end-to-end path per image (``SpecModel.example``: dlops' decode and preprocessing, then one model
call and the answer), and the decode and preprocessing alone. Each figure is a loop of about
``LOOP_SECONDS``; medians across rounds, and the paired ratio openvino / cpu of each round.
Writes bench/results/providers.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench.floors import SpecModel
from bench.load import DIGIT
from bench.machine import machine_at_end, machine_info
from bench.orientation import PROBA_TOLERANCE, document_page
from bench.rounds import rotated
from bench.servers import ROOT
from bench.study import (
    RESULTS,
    command_line,
    fmt,
    log,
    quick_or_full,
    run_header,
    run_study,
    write_results,
)
from dlops import config
from dlops.model.spec import load_spec
from dlops.pipeline.inference import Classifier

PROVIDERS = ("cpu", "openvino")  # DLOPS_PROVIDERS' names
SETTINGS = ((1, 1), (2, 2), (1, 2))  # (intra-op threads, cores)
BATCHES = (1, 8)
# Batch sizes the warm-up and the rounds never use: each one's first call compiles afresh.
NEW_BATCHES = (3, 5, 7)
SETTLED_CALLS = 3
STORED = {"orientation": None, "binary_classifier_3": DIGIT}  # model -> upload (None: the page)
DEFAULTS = {"rounds": (12, 4)}  # (full, --quick): ~90 s and ~20 s on 2 cores
LOOP_SECONDS = (0.2, 0.08)  # (full, --quick): enough calls for a figure, few enough for rounds
END_TO_END, PREPROCESS = "end-to-end", "decode + preprocess"
MEASURES = (*(f"batch {size}" for size in BATCHES), END_TO_END)  # each provider's


@dataclass(frozen=True)
class Case:
    """A stored model and the upload it is fed."""

    name: str
    entry: Path
    upload: bytes


def store_entry(name: str) -> Path:
    """The latest version of ``name`` in the BentoML model store, as ``bentoml serve`` finds it."""
    models = Path(os.environ.get("BENTOML_HOME", ROOT / ".bentoml")) / "models" / name
    latest = models / "latest"
    if not latest.is_file():
        raise SystemExit(
            f"{name} is not in the model store {models.parent}: import it (`make import`, or "
            f"import_model.py FILE --name {name}), set BENTOML_HOME, or give --entry DIR"
        )
    return models / latest.read_text().strip()


def timed(call: Callable[[], object], number: int) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) per call over ``number`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
        call()
    return (time.perf_counter() - wall) / number, (time.process_time() - cpu) / number


def first_call_cost(classifier: Classifier, sizes: tuple[int, ...]) -> float:
    """The median, over ``sizes``, of a first call's wall seconds beyond a settled call's: the
    median of the next SETTLED_CALLS, since the CPU provider's second call at a new shape was
    often slower than its first here."""
    extra = []
    for size in sizes:
        batch = classifier.example(size)
        first, *settled = (
            timed(lambda b=batch: classifier.run(b), 1)[0] for _ in range(1 + SETTLED_CALLS)
        )
        extra.append(first - statistics.median(settled))
    return statistics.median(extra)


def disagreement(model: SpecModel, classifiers: dict[str, Classifier], example: np.ndarray) -> str:
    """Why the providers' answers to ``example`` differ at some batch size, or '' if they agree."""
    post = model.postprocessor
    for size in BATCHES:
        batch = np.ascontiguousarray(np.broadcast_to(example, (size, *example.shape)))
        cpu, openvino = (post.probabilities(classifiers[name].run(batch)) for name in PROVIDERS)
        # A multi-label answer has no "label": its probabilities alone decide.
        labels = [[post.answer(row).get("label") for row in rows] for rows in (cpu, openvino)]
        gap = float(np.max(np.abs(cpu - openvino)))
        if gap > PROBA_TOLERANCE or labels[0] != labels[1]:
            return f"batch {size}: labels {labels[0]} vs {labels[1]}, largest gap {gap:.2e}"
    return ""


def measure_case(case: Case, threads: int, rounds: int, loop_seconds: float) -> dict[str, Any]:
    """Both providers on ``case`` in this process: its checks, then ``rounds`` of figures."""
    spec = load_spec(case.entry)
    model_path = case.entry / config.MODEL_FILE_NAME
    model = SpecModel(model_path, spec)  # for its decode and preprocessing
    classifiers = {}
    for name in PROVIDERS:
        try:
            classifiers[name] = Classifier(
                model_path, spec, threads, (config.PROVIDER_NAMES[name],)
            )
        except Exception as error:  # the reason goes to the report, not a traceback
            return {"failure": f"{name} did not load: {type(error).__name__}: {error}"}
        classifiers[name].warm_up()
    first_call = {name: first_call_cost(c, NEW_BATCHES) for name, c in classifiers.items()}
    example = model.example(case.upload)
    found = disagreement(model, classifiers, example)
    if found:
        return {"failure": f"the providers' answers differ: {found}"}

    def answer(classifier: Classifier) -> object:
        rows = model.postprocessor.probabilities(classifier.run(model.example(case.upload)[None]))
        return model.postprocessor.answer(rows[0])

    calls: dict[tuple[str, str | None], tuple[Callable[[], object], int]] = {}
    for size in BATCHES:
        batch = np.ascontiguousarray(np.broadcast_to(example, (size, *example.shape)))
        for name, classifier in classifiers.items():
            calls[f"batch {size}", name] = (lambda c=classifier, b=batch: c.run(b), size)
    for name, classifier in classifiers.items():
        calls[END_TO_END, name] = (lambda c=classifier: answer(c), 1)
    calls[PREPROCESS, None] = (lambda: model.example(case.upload), 1)
    # Calls per loop: one loop of each lasts about loop_seconds on its own provider.
    numbers = {
        key: max(1, round(loop_seconds / timed(call, 3)[0])) for key, (call, _) in calls.items()
    }
    samples = []
    for round_number in range(rounds):
        order = rotated([*PROVIDERS], round_number)
        for measure in (*MEASURES, PREPROCESS):
            for name in order if measure != PREPROCESS else [None]:
                call, images = calls[measure, name]
                wall, cpu = timed(call, numbers[measure, name])
                samples.append(
                    {
                        "round": round_number,
                        "measure": measure,
                        "provider": name,
                        "us_per_image": wall / images * 1e6,
                        "cores_busy": cpu / wall,
                    }
                )
    return {
        "providers_in_use": {name: list(c.providers) for name, c in classifiers.items()},
        "first_call_extra_ms": {name: seconds * 1e3 for name, seconds in first_call.items()},
        "samples": samples,
    }


def measure_setting(
    cases: list[Case], threads: int, rounds: int, loop_seconds: float
) -> list[dict[str, Any]]:
    return [measure_case(case, threads, rounds, loop_seconds) for case in cases]


def in_pinned_process(cpus: list[int], task: Callable[..., Any], *args: Any) -> Any:
    # A fresh (spawned) process pinned before onnxruntime makes any thread: every thread it
    # makes then keeps to these cores.
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=os.sched_setaffinity, initargs=(0, cpus)
    ) as pool:
        return pool.submit(task, *args).result()


def summary(samples: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    """Across rounds: each provider's median µs per image and cores busy, and the paired ratio."""
    by = {
        name: {s["round"]: s for s in samples if s["measure"] == measure and s["provider"] == name}
        for name in PROVIDERS
    }
    ratios = [by["openvino"][r]["us_per_image"] / by["cpu"][r]["us_per_image"] for r in by["cpu"]]
    return {
        **{
            f"{name}_{key}": statistics.median(s[key] for s in by[name].values())
            for name in PROVIDERS
            for key in ("us_per_image", "cores_busy")
        },
        "openvino_over_cpu": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    if "failure" in result:
        return result
    samples = result["samples"]
    preprocess = [s["us_per_image"] for s in samples if s["measure"] == PREPROCESS]
    return {
        **result,
        "measures": {measure: summary(samples, measure) for measure in MEASURES},
        "preprocess_us": statistics.median(preprocess),
    }


def openvino_version() -> str | None:
    # The wheel bundles OpenVINO's runtime without its Python package; the library's file name
    # carries its version.
    import onnxruntime

    found = sorted(Path(onnxruntime.__file__).parent.glob("capi/libopenvino.so.*.*.*"))
    return found[0].name.removeprefix("libopenvino.so.") if found else None


def report(data: dict[str, Any]) -> list[str]:
    lines = [
        "# OpenVINO against onnxruntime's CPU provider, in process",
        "",
        *run_header(data),
        "",
        f"onnxruntime-openvino {data['onnxruntime_openvino']} (OpenVINO "
        f"{data['openvino'] or '?'}, device {data['device']}). dlops' `Classifier` with "
        "`DLOPS_PROVIDERS=cpu` and with `=openvino`, each setting in a fresh process pinned to its "
        f"cores; {data['rounds']} alternating rounds, medians; openvino / cpu is the median of "
        "each round's ratio, its range in brackets (below 1: OpenVINO is faster). Cores busy: CPU "
        "time over wall time, every thread of the process. Settings: onnxruntime's intra-op "
        "threads, on as many cores; intra-op 1 on 2 cores is `DLOPS_INTRA_OP_THREADS=1` "
        "unpinned: OpenVINO's CPU plugin would size its own pool from every core, and dlops "
        "passes the setting on as its `num_of_threads` (cores busy shows whether it holds). "
        "Answers agreed within "
        f"{PROBA_TOLERANCE} at batch {' and '.join(map(str, BATCHES))} before anything was "
        "measured.",
    ]
    for case in data["cases"]:
        lines += ["", f"## {case['name']} (`{case['entry']}`, {case['upload_bytes']:,} B upload)"]
        failures = [s for s in case["settings"] if "failure" in s]
        for setting in failures:
            lines += ["", f"{setting['setting']}: {setting['failure']}"]
        if len(failures) == len(case["settings"]):
            continue
        lines += [
            "",
            "| setting | per image | cpu µs | openvino µs | openvino / cpu "
            "| cores busy: cpu, openvino |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for setting in case["settings"]:
            if "failure" in setting:
                continue
            for measure, row in setting["measures"].items():
                lines.append(
                    f"| {setting['setting']} | {measure} | {fmt(row['cpu_us_per_image'])} | "
                    f"{fmt(row['openvino_us_per_image'])} | {row['openvino_over_cpu']:.2f} "
                    f"[{row['ratio_min']:.2f}-{row['ratio_max']:.2f}] | "
                    f"{row['cpu_cores_busy']:.2f}, {row['openvino_cores_busy']:.2f} |"
                )
        lines.append("")
        for setting in case["settings"]:
            if "failure" in setting:
                continue
            extra = setting["first_call_extra_ms"]
            lines.append(
                f"- {setting['setting']}: decode + preprocess {fmt(setting['preprocess_us'])} µs "
                f"of the end-to-end figure; the first call at a new batch size "
                f"({', '.join(map(str, NEW_BATCHES))}) takes {fmt(extra['cpu'])} ms (cpu), "
                f"{fmt(extra['openvino'])} ms (openvino) longer than a settled call."
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~20 s)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 12; --quick 4)")
    parser.add_argument(
        "--entry",
        type=Path,
        action="append",
        help="a model store entry (repeatable; default: the store's orientation and "
        "binary_classifier_3)",
    )
    parser.add_argument(
        "--image", type=Path, help="the upload for every --entry (default: the ~2 MP page)"
    )
    args = parser.parse_args(argv)
    rounds = quick_or_full(args, DEFAULTS)["rounds"]
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.image and not args.entry:
        parser.error("--image is the upload for the --entry models: give them too")
    import onnxruntime

    if config.PROVIDER_NAMES["openvino"] not in onnxruntime.get_available_providers():
        raise SystemExit(
            f"this onnxruntime ({onnxruntime.__version__}, {onnxruntime.__file__}) has no "
            "OpenVINO provider: run with .venv-peers/openvino/bin/python (see bench/providers.py)"
        )
    machine = machine_info()
    if args.entry:
        upload = args.image.read_bytes() if args.image else document_page()
        cases = [Case(entry.parent.name, entry.resolve(), upload) for entry in args.entry]
    else:
        cases = [
            Case(name, store_entry(name), image.read_bytes() if image else document_page())
            for name, image in STORED.items()
        ]
    cpus = sorted(os.sched_getaffinity(0))
    loop_seconds = LOOP_SECONDS[args.quick]
    results: dict[tuple[int, int], list[dict[str, Any]]] = {}
    notes = []
    for threads, cores in SETTINGS:
        if cores > len(cpus):
            notes.append(f"intra-op {threads} on {cores} cores: skipped, {len(cpus)} usable")
            continue
        log(f"intra-op {threads} thread(s) on {cores} core(s): {rounds} rounds")
        measured = in_pinned_process(
            cpus[:cores], measure_setting, cases, threads, rounds, loop_seconds
        )
        results[threads, cores] = [summarise(result) for result in measured]
    data = {
        "command": command_line("bench.providers", argv),
        "rounds": rounds,
        "loop_seconds": loop_seconds,
        "onnxruntime_openvino": onnxruntime.__version__,
        "openvino": openvino_version(),
        "device": onnxruntime.get_device(),
        "notes": notes,
        "cases": [
            {
                "name": case.name,
                "entry": str(
                    case.entry.relative_to(ROOT) if case.entry.is_relative_to(ROOT) else case.entry
                ),
                "upload_bytes": len(case.upload),
                "settings": [
                    {
                        "setting": f"intra-op {threads}, {cores} core{'s' * (cores > 1)}",
                        **found[index],
                    }
                    for (threads, cores), found in results.items()
                ],
            }
            for index, case in enumerate(cases)
        ],
    }
    machine = machine_at_end(machine)
    # machine_info knows the onnxruntime package by its usual name; this venv's is another.
    machine["packages"]["onnxruntime-openvino"] = onnxruntime.__version__
    data["machine"] = machine
    data["wall_seconds"] = time.perf_counter() - started
    lines = report(data) + ([""] + [f"- {note}" for note in notes] if notes else [])
    for path in write_results(RESULTS, "providers", data, lines):
        log(f"wrote {path.relative_to(ROOT)}")
    failures = [s["failure"] for c in data["cases"] for s in c["settings"] if "failure" in s]
    if failures:
        raise SystemExit(f"bench.providers: {failures[0]}")


if __name__ == "__main__":
    run_study(main, "bench.providers")
