"""`make bench`'s report (bench/run.py): the raw figures of one run turned into medians, ratios
and latest.{json,md,png} (or workers.*) in bench/results/."""

from __future__ import annotations

import statistics
from operator import itemgetter
from pathlib import Path
from typing import Any

from bench.ceiling import BATCH
from bench.rounds import LATENCIES, grouped, paired, spread
from bench.servers import FLOOR, LEAN
from bench.study import fmt, run_header, write_results

SEED, DLOPS = "seed", "dlops"
BASELINE = "dlops@baseline"  # `--baseline REF`: dlops as it was at a git ref, in the same rounds
BATCH_SUBJECT = f"dlops batch-{BATCH}"  # POST /predict_batch with BATCH images, on dlops' server
# FLOOR and LEAN, the floors (bench/floors.py): the least work any Python server does for the
# same request.
SUBJECTS = (SEED, FLOOR, LEAN, BASELINE, DLOPS, BATCH_SUBJECT)
SERVERS = (SEED, FLOOR, LEAN, BASELINE, DLOPS)  # the processes behind the subjects
LEVEL = ("subject", "workers", "concurrency")  # what a summary row is the median of
# The batch target: a batch-64 request's images per second over single requests' at one level.
BATCH_TARGET = 10.0
# "What a request costs" in the batching reading is read at this many clients (when measured):
# adaptive batching needs several requests in flight, and this is the level the service is
# sized for.
READING_CONCURRENCY = 16


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per subject, worker count and concurrency: medians across rounds (and the rps spread, to
    judge noise). images_per_s is rps times the images each request carries."""
    groups = grouped(runs, LEVEL)
    summary = []
    for key in sorted(groups, key=lambda k: (SUBJECTS.index(k[0]), k[1], k[2])):
        mine = groups[key]
        images = mine[0]["images_per_request"]
        row = {**dict(zip(LEVEL, key, strict=True)), "images_per_request": images}
        row |= {"rounds": len(mine), **spread(mine)}
        row["images_per_s"] = row["rps"] * images
        summary.append(row)
    return summary


def _images_per_s(run: dict[str, Any]) -> float:
    return run["rps"] * run["images_per_request"]


def ratios(
    summary: list[dict[str, Any]], runs: list[dict[str, Any]], subject: str, peer: str
) -> list[dict[str, Any]]:
    """subject / peer at each worker count and concurrency both were measured at, two ways.

    ``per_image_rate`` (images per second: rps for single-image requests) and the latencies are
    ratios of the medians across rounds. ``paired_per_image_rate`` and ``paired_p99_ms`` are the
    medians of the per-round ratios: within one round the subjects ran back to back, so a slow
    spell of the machine mostly cancels out of those.
    """
    by_key = {tuple(row[k] for k in LEVEL): row for row in summary}
    groups = grouped(runs, LEVEL)
    result = []
    for (name, workers, concurrency), row in by_key.items():
        theirs = by_key.get((peer, workers, concurrency))
        if name != subject or theirs is None:
            continue
        mine, other = groups[(name, workers, concurrency)], groups[(peer, workers, concurrency)]
        ratio = {
            "subject": subject,
            "peer": peer,
            "workers": workers,
            "concurrency": concurrency,
            "per_image_rate": row["images_per_s"] / theirs["images_per_s"],
        }
        ratio.update({key: row[key] / theirs[key] for key in LATENCIES})
        ratio["paired_per_image_rate"] = paired(mine, other, _images_per_s)
        ratio["paired_p99_ms"] = paired(mine, other, itemgetter("p99_ms"))
        result.append(ratio)
    return result


def scaling(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each server's throughput at each worker count, and its efficiency: rps at W workers over
    W times its rps at one worker, at the same concurrency (None without a 1-worker figure)."""
    by_key = {(row["subject"], row["workers"], row["concurrency"]): row for row in summary}
    rows = []
    for (subject, workers, concurrency), row in by_key.items():
        if subject not in SERVERS:
            continue
        one = by_key.get((subject, 1, concurrency))
        rows.append(
            {
                "subject": subject,
                "workers": workers,
                "concurrency": concurrency,
                "rps": row["rps"],
                "p99_ms": row["p99_ms"],
                "efficiency": row["rps"] / (workers * one["rps"]) if one else None,
            }
        )
    return rows


def summarise_ceiling(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians across the ceiling's rounds, the sweep's per batch size."""
    scalars = [key for key, value in rounds[0].items() if isinstance(value, float)]
    costs = grouped((cost for ceiling in rounds for cost in ceiling["batch_costs"]), ("batch",))
    return {
        "median": {key: statistics.median(c[key] for c in rounds) for key in scalars},
        "batch_costs": [
            {
                "batch": batch,
                "infer_us_per_image": statistics.median(c["infer_us_per_image"] for c in mine),
            }
            for (batch,), mine in sorted(costs.items())
        ],
    }


def _latencies(row: dict[str, Any]) -> str:
    return f"| {fmt(row['p50_ms'], 2)} | {fmt(row['p95_ms'], 2)} | {fmt(row['p99_ms'], 2)} "


def _load_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | workers | concurrency | rps (median) | rps min–max | p50 ms | p95 ms "
        "| p99 ms | non-200 / sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in data["load"]["summary"]:
        if row["subject"] not in SERVERS:
            continue
        lines.append(
            f"| {row['subject']} | {row['workers']} | {row['concurrency']} "
            f"| {fmt(row['rps'], 0)} | {fmt(row['rps_min'], 0)}–{fmt(row['rps_max'], 0)} "
            + _latencies(row)
            + f"| {row['non_200']} / {row['sent']} |"
        )
    for row in data["load"]["ratios"]:
        lines.append(
            f"| **{DLOPS} / {SEED}** | {row['workers']} | {row['concurrency']} "
            f"| **{row['per_image_rate']:.2f}×** | | {row['p50_ms']:.2f}× | {row['p95_ms']:.2f}× "
            f"| **{row['p99_ms']:.2f}×** | |"
        )
    for row in data["load"]["ratios"]:
        lines.append(
            f"| {DLOPS} / {SEED}, paired by round | {row['workers']} | {row['concurrency']} "
            f"| {row['paired_per_image_rate']:.2f}× | | | | {row['paired_p99_ms']:.2f}× | |"
        )
    for key, peer in (("lean_ratios", LEAN), ("floor_ratios", FLOOR)):
        for row in data["load"].get(key, []):
            lines.append(
                f"| **{DLOPS} / {peer}** | {row['workers']} | {row['concurrency']} "
                f"| **{row['per_image_rate']:.2f}×** (paired {row['paired_per_image_rate']:.2f}×) "
                f"| | {row['p50_ms']:.2f}× | {row['p95_ms']:.2f}× | **{row['p99_ms']:.2f}×** "
                f"(paired {row['paired_p99_ms']:.2f}×) | |"
            )
    for row in data["load"].get("baseline_vs_seed", []):
        lines.append(
            f"| {BASELINE} / {SEED} | {row['workers']} | {row['concurrency']} "
            f"| {row['per_image_rate']:.2f}× (paired {row['paired_per_image_rate']:.2f}×) | "
            f"| {row['p50_ms']:.2f}× | {row['p95_ms']:.2f}× | {row['p99_ms']:.2f}× | |"
        )
    for row in data["load"].get("baseline_ratios", []):
        lines.append(
            f"| **{DLOPS} / {BASELINE}** | {row['workers']} | {row['concurrency']} "
            f"| **{row['per_image_rate']:.2f}×** (paired {row['paired_per_image_rate']:.2f}×) | "
            f"| {row['p50_ms']:.2f}× | {row['p95_ms']:.2f}× | **{row['p99_ms']:.2f}×** "
            f"(paired {row['paired_p99_ms']:.2f}×) | |"
        )
    lines += [
        "",
        "Ratio rows: ratios of the medians above. Paired rows: the median of each round's ratio "
        "(the two subjects ran back to back), less sensitive to the machine's slow spells.",
    ]
    if data["load"].get("lean_ratios"):
        lines.append(
            f"{FLOOR} and {LEAN}: bench/floors.py under uvicorn (httptools, uvloop, no access "
            "log), raw ASGI: the first reads the upload and answers a constant JSON; the second "
            "also cuts out "
            "the multipart part, decodes it with Pillow and runs the model (one onnxruntime "
            "thread), no validation and no framework. dlops does more work per image (its "
            "preprocessing), so dlops / lean understates how close its path is to the work."
        )
    if data.get("baseline"):
        lines.append(
            f"{BASELINE}: dlops as it was at `{data['baseline']['ref']}` (commit "
            f"{data['baseline']['commit'][:12]}, its own files from `git archive`, its own model "
            "import), served side by side with the others and measured in the same rounds: "
            "before/after from one run."
        )
    return lines


def _batch_section(data: dict[str, Any]) -> list[str]:
    summary = {(r["subject"], r["workers"], r["concurrency"]): r for r in data["load"]["summary"]}
    ratio = {(r["workers"], r["concurrency"]): r for r in data["load"]["batch_ratios"]}
    ceiling = data["ceiling"]["median"]["batched_images_per_s"]
    cores = data["machine"]["cpus_usable"]
    lines = [
        f"| workers | concurrency | requests/s | images/s | p50 ms | p95 ms | p99 ms "
        f"| non-200 / sent | images/s ÷ single /predict | paired by round "
        f"| bound: ceiling ({BATCH}/call) × parallel ÷ single /predict |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (subject, workers, concurrency), row in summary.items():
        if subject != BATCH_SUBJECT:
            continue
        single = summary.get((DLOPS, workers, concurrency))
        both = ratio.get((workers, concurrency))
        # The ceiling is one process on one core: W workers can run min(W, cores, clients) of it.
        parallel = min(workers, cores, concurrency)
        lines.append(
            f"| {workers} | {concurrency} | {fmt(row['rps'], 0)} | {fmt(row['images_per_s'], 0)} "
            + _latencies(row)
            + f"| {row['non_200']} / {row['sent']} "
            + (
                f"| **{both['per_image_rate']:.2f}×** | {both['paired_per_image_rate']:.2f}× "
                if both
                else "| | "
            )
            + (f"| {ceiling * parallel / single['images_per_s']:.2f}× |" if single else "| |")
        )
    shown = [r["per_image_rate"] for r in data["load"]["batch_ratios"]]
    if shown:
        verdict = "met" if min(shown) >= BATCH_TARGET else "not met"
        lines += [
            "",
            f"Target ≥ {BATCH_TARGET:.0f}× the per-image rate of single `/predict` requests at the "
            f"same concurrency: {verdict} ({', '.join(f'{r:.2f}×' for r in shown)}). The last "
            f"column bounds what any batch size can reach: the in-process ceiling with {BATCH} "
            "images per model call (decode and preprocessing stay per image), times the "
            f"processes that can run it at once (min of workers, {cores} usable cores and "
            "clients), over the same single-request rate.",
        ]
    return lines


def _batching_reading(data: dict[str, Any]) -> str:
    """How much of one /predict request's cost sharing the model call saves in-process."""
    costs = {cost["batch"]: cost["infer_us_per_image"] for cost in data["ceiling"]["batch_costs"]}
    workers = data["settings"]["workers"][0]
    singles = {
        row["concurrency"]: row
        for row in data["load"]["summary"]
        if row["subject"] == DLOPS and row["workers"] == workers
    }
    level = READING_CONCURRENCY if READING_CONCURRENCY in singles else max(singles)
    # With `level` clients at most `level` requests are in flight: no batch can be larger.
    batch = max((size for size in costs if size <= level), default=min(costs))
    saving, best = costs[1] - costs[batch], costs[1] - costs[max(costs)]
    request_us = 1e6 / singles[level]["rps"]
    return (
        f"Reading: in this process, sharing a model call saves at most {fmt(saving)} µs of "
        f"inference per image (batches of {batch}, the most {level} clients can have in flight; "
        f"{fmt(best)} µs at {max(costs)}), against the {fmt(request_us, 0)} µs a single "
        f"`/predict` request costs at {level} clients (1e6 / {fmt(singles[level]['rps'], 0)} "
        f"rps, dlops, {workers} worker(s)): {saving / request_us:.0%} of it. Served, dlops' "
        "adaptive batching (dlops/pipeline/turn_batch.py) saves more than this bound, because "
        "the images that arrive together also share the rest of a model call's work and the "
        "loop's turns: what it gains end to end is dlops against `--baseline` at a commit "
        "before it, in the same rounds."
    )


def _ceiling_section(data: dict[str, Any]) -> list[str]:
    ceiling = data["ceiling"]["median"]
    costs = data["ceiling"]["batch_costs"]
    first = costs[0]["infer_us_per_image"]
    lines = [
        "| what | images/s |",
        "| --- | ---: |",
        "| decode + preprocess + infer, one image per model call "
        f"| {fmt(ceiling['single_images_per_s'], 0)} |",
        f"| the same, {BATCH} images per model call | {fmt(ceiling['batched_images_per_s'], 0)} |",
        "",
        f"One image: decode + preprocess {fmt(ceiling['preprocess_us'], 0)} µs, inference "
        f"{fmt(ceiling['infer_us'], 0)} µs (medians of {len(data['ceiling']['rounds'])} "
        "rounds, best of 3 loops each).",
        "",
        "Inference alone by batch size (one model call on already preprocessed uint8 [N, 28, 28] "
        "pixels, with the sigmoid and the labels; median of 7 loops, then of the rounds). Decode "
        f"+ preprocess stays {fmt(ceiling['preprocess_us'])} µs per image at every batch size.",
        "",
        "| batch size | inference µs / image | saved vs batch 1, µs / image |",
        "| ---: | ---: | ---: |",
    ]
    for cost in costs:
        lines.append(
            f"| {cost['batch']} | {fmt(cost['infer_us_per_image'], 2)} "
            f"| {fmt(first - cost['infer_us_per_image'], 2)} |"
        )
    return [*lines, "", _batching_reading(data)]


def _memory_entries(data: dict[str, Any], subject: str) -> list[dict[str, Any]]:
    return [entry for entry in data["memory"] if entry["subject"] == subject]


def _tree(entry: dict[str, Any], field: str, role: str | None = None) -> float:
    return sum(p[field] for p in entry["processes"] if role is None or p["role"] == role)


def _scaling_section(data: dict[str, Any]) -> list[str]:
    """Throughput per worker count and subject at the highest concurrency, with efficiency."""
    rows = data.get("scaling", [])
    if not rows:
        return []
    top = max(row["concurrency"] for row in rows)
    workers = data["settings"]["workers"]
    subjects = [name for name in SERVERS if any(row["subject"] == name for row in rows)]
    by_key = {(row["subject"], row["workers"]): row for row in rows if row["concurrency"] == top}
    lean = {r["workers"]: r for r in data["load"].get("lean_ratios", []) if r["concurrency"] == top}
    placements = {entry["workers"]: entry["note"] for entry in data.get("placements", [])}
    lines = [
        f"At {top} clients; efficiency = rps at W workers / (W × rps at 1 worker).",
        "",
        "| subject | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in workers) + " |",
        "| --- |" + " ---: |" * len(workers),
    ]
    for subject in subjects:
        cells = []
        for count in workers:
            row = by_key.get((subject, count))
            if row is None:
                cells.append("")
                continue
            efficiency = row["efficiency"]
            shown = f" ({efficiency:.0%})" if efficiency is not None and count > 1 else ""
            cells.append(f"{fmt(row['rps'], 0)}{shown}")
        lines.append(f"| {subject} | " + " | ".join(cells) + " |")
    if lean:
        lines.append(
            f"| **{DLOPS} / {LEAN}** | "
            + " | ".join(
                f"**{lean[w]['per_image_rate']:.2f}×**" if w in lean else "" for w in workers
            )
            + " |"
        )
    lines += ["", *(f"- {w} worker(s): {placements[w]}" for w in workers if w in placements)]
    return lines


def _workers_section(data: dict[str, Any]) -> list[str]:
    """Both servers at each worker count side by side: throughput, tail latency."""
    summary = {(r["subject"], r["workers"], r["concurrency"]): r for r in data["load"]["summary"]}
    ratio = {(r["workers"], r["concurrency"]): r for r in data["load"]["ratios"]}
    lines = [
        "| concurrency | workers | seed rps | seed p99 ms | dlops rps | dlops p99 ms "
        "| dlops / seed rps |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency in sorted({key[2] for key in summary}):
        for workers in data["settings"]["workers"]:
            seed = summary.get((SEED, workers, concurrency))
            dlops = summary.get((DLOPS, workers, concurrency))
            if seed is None or dlops is None:
                continue
            lines.append(
                f"| {concurrency} | {workers} | {fmt(seed['rps'], 0)} | {fmt(seed['p99_ms'], 2)} "
                f"| {fmt(dlops['rps'], 0)} | {fmt(dlops['p99_ms'], 2)} "
                f"| {ratio[(workers, concurrency)]['per_image_rate']:.2f}× |"
            )
    return lines


def _memory_summary(data: dict[str, Any]) -> list[str]:
    lines = [
        "| workers | seed tree RSS | seed tree PSS | dlops tree RSS | dlops tree PSS "
        "| dlops per worker RSS | dlops per worker PSS |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    seeds = {entry["workers"]: entry for entry in _memory_entries(data, SEED)}
    dlops_trees = {entry["workers"]: entry for entry in _memory_entries(data, DLOPS)}
    for workers, dlops in dlops_trees.items():
        seed = seeds[workers]
        count = sum(p["role"] == "worker" for p in dlops["processes"])
        per_worker = {
            field: _tree(dlops, field, "worker") / count if count else float("nan")
            for field in ("rss_mib", "pss_mib")
        }
        lines.append(
            f"| {workers} | {fmt(_tree(seed, 'rss_mib'))} | {fmt(_tree(seed, 'pss_mib'))} "
            f"| {fmt(_tree(dlops, 'rss_mib'))} | {fmt(_tree(dlops, 'pss_mib'))} "
            f"| {fmt(per_worker['rss_mib'])} | {fmt(per_worker['pss_mib'])} |"
        )
    lines += ["", "MiB; per worker is the mean over dlops' worker processes (its arbiter aside)."]
    if len(dlops_trees) > 1:
        (low, low_entry), (high, high_entry) = min(dlops_trees.items()), max(dlops_trees.items())
        added = (_tree(high_entry, "pss_mib") - _tree(low_entry, "pss_mib")) / (high - low)
        lines.append(
            f"Each dlops worker beyond {low} added {fmt(added)} MiB of PSS to the tree "
            f"({low} → {high} workers): what a dyno needs per extra worker."
        )
    return lines


def _memory_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | workers | process | pid | RSS MiB | PSS MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for entry in data["memory"]:
        subject, workers = entry["subject"], entry["workers"]
        for process in entry["processes"]:
            lines.append(
                f"| {subject} | {workers} | {process['role']} | {process['pid']} "
                f"| {fmt(process['rss_mib'])} | {fmt(process['pss_mib'])} |"
            )
        lines.append(
            f"| **{subject}** | **{workers}** | **whole tree** | "
            f"| **{fmt(_tree(entry, 'rss_mib'))}** | **{fmt(_tree(entry, 'pss_mib'))}** |"
        )
    return lines


def markdown(data: dict[str, Any]) -> list[str]:
    settings = data["settings"]
    image = data["image_size"]
    dlops_env = " ".join(f"{k}={v}" for k, v in settings["dlops_env"].items()) or "(none)"
    workers = settings["workers"]
    shown_workers = ", ".join(str(w) for w in workers)
    batch_answers = [a for a in data["answers"] if a["subject"] == BATCH_SUBJECT]
    lines = [
        "# dlops against the seed article's FastAPI app",
        "",
        *run_header(data),
        "",
        f"Load: hey POSTs `{settings['image']}` ({settings['image_bytes']} bytes) as the "
        f"multipart field `file` to `/predict`, {settings['requests']} requests per measurement "
        f"over keep-alive connections, after {settings['warmup']} warm-up requests per server. "
        f"{settings['rounds']} round(s); in each round every concurrency runs every subject in "
        "turn (order rotating), so drift hits all alike; figures are medians across rounds. "
        + " ".join(
            f"{entry['workers']} worker(s): {entry['note']}."
            for entry in data.get("placements", [])
        )
        + " rps counts 200 answers only; latencies have hey's 0.1 ms resolution.",
        f"{BATCH_SUBJECT}: hey POSTs one body carrying {BATCH} copies of the same image in the "
        f"field `file` to `/predict_batch` of the same dlops server, "
        f"{settings['batch_requests']} requests per measurement at concurrency "
        f"{', '.join(str(c) for c in settings['batch_concurrency'])}. Checked before measuring: "
        + "; ".join(
            f"{a['workers']} worker(s): {a['answer']['items']} answers, "
            + ", ".join(f"{n} × label {label!r}" for label, n in a["answer"]["labels"].items())
            for a in batch_answers
        )
        + ".",
        f"Subjects: seed = `uvicorn bench.seed_app:app --workers W`; dlops = "
        f"`DLOPS_WORKERS=W bentoml serve` as `make serve` starts it, extra environment: "
        f"{dlops_env}; W = {shown_workers}"
        + (
            " (one pair of servers per W, one W after the other; rounds alternate within each W)."
            if len(workers) > 1
            else "."
        ),
        "",
        "## Throughput and latency: one image per request to `/predict`",
        "",
        *_load_table(data),
        "",
        f"## Batch: {BATCH} images per request to `/predict_batch`",
        "",
        *_batch_section(data),
        "",
    ]
    if len(workers) > 1:
        lines += ["## Workers", "", *_workers_section(data), ""]
        lines += ["## Scaling across workers", "", *_scaling_section(data), ""]
    lines += [
        "## Ceiling: the service's code in one process, no HTTP",
        "",
        *_ceiling_section(data),
        "",
        "## Cold start: process start to the first 200",
        "",
        "| subject | workers | probe | median s | samples s |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for entry in data["cold_start"]:
        samples = entry["samples_s"]
        lines.append(
            f"| {entry['subject']} | {entry['workers']} | GET {entry['probe']} "
            f"| {statistics.median(samples):.2f} | {', '.join(f'{s:.2f}' for s in samples)} |"
        )
    lines += [
        "",
        "## Memory after the load",
        "",
        "RSS counts shared pages in every process that maps them; PSS splits them, so its sum is "
        "the tree's real footprint. Both servers run side by side, so the pages of the libraries "
        "they share (Python, numpy, onnxruntime) are split across the two trees: a tree alone "
        "would show a little more PSS.",
        "",
        *_memory_summary(data),
        "",
        *_memory_table(data),
        "",
        "## Container image",
        "",
        f"`{image['tag']}`: "
        + (
            f"{fmt(image['mib'])} MiB ({image['engine']})"
            if image["bytes"] is not None
            else f"not measured ({image['note']})"
        ),
        "",
    ]
    return lines


def write_plot(path: Path, data: dict[str, Any]) -> None:
    # Imported here: matplotlib is a benchmark dependency (requirements/bench.txt), and the
    # tests import this module's pure functions with the dev requirements alone.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server, and no GUI toolkit to import
    import matplotlib.pyplot as plt  # only after the backend is chosen

    summary = data["load"]["summary"]
    concurrencies = sorted({row["concurrency"] for row in summary})
    several = len(data["settings"]["workers"]) > 1
    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(11, 4.5))
    for subject in SUBJECTS:
        for workers in data["settings"]["workers"]:
            rows = sorted(
                (r for r in summary if (r["subject"], r["workers"]) == (subject, workers)),
                key=lambda r: r["concurrency"],
            )
            if not rows:
                continue
            plural = "s" if workers > 1 else ""
            label = f"{subject}, {workers} worker{plural}" if several else subject
            x = [row["concurrency"] for row in rows]
            # Images per second puts batch requests on the same scale as single ones.
            scale = [row["images_per_request"] for row in rows]
            (line,) = throughput.plot(
                x, [row["images_per_s"] for row in rows], marker="o", label=label
            )
            throughput.fill_between(
                x,
                [row["rps_min"] * s for row, s in zip(rows, scale, strict=True)],
                [row["rps_max"] * s for row, s in zip(rows, scale, strict=True)],
                color=line.get_color(),
                alpha=0.2,
            )
            tail.plot(x, [row["p99_ms"] for row in rows], marker="o", label=label)
    ceiling = data["ceiling"]["median"]
    throughput.axhline(
        ceiling["single_images_per_s"],
        color="grey",
        linestyle="--",
        label="ceiling, 1 image per call, one core",
    )
    throughput.axhline(
        ceiling["batched_images_per_s"],
        color="grey",
        linestyle=":",
        label=f"ceiling, {BATCH} images per call, one core",
    )
    throughput.set(yscale="log", ylabel="images answered per second (median, min–max shaded)")
    throughput.set_title("Throughput")
    tail.set(yscale="log", ylabel="p99 latency per request, ms (median)")
    tail.set_title("p99 latency")
    for axes in (throughput, tail):
        axes.set_xscale("log", base=2)
        axes.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axes.set_xlabel("concurrent connections")
        axes.grid(True, which="both", alpha=0.3)
    # One legend under both panels: with several worker counts it would cover the lines.
    handles, labels = throughput.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize="small")
    figure.suptitle(f"dlops vs seed, {data['machine']['cpu_model']}, {data['machine']['date']}")
    rows = -(-len(labels) // 4)  # the legend's rows, rounded up
    figure.tight_layout(rect=(0, 0.045 * rows, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(directory: Path, stem: str, data: dict[str, Any]) -> list[Path]:
    paths = [*write_results(directory, stem, data, markdown(data)), directory / f"{stem}.png"]
    write_plot(paths[2], data)
    return paths
