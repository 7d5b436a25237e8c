"""Turn the raw figures of one run into medians, ratios and the three files in bench/results/."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server, and no GUI toolkit to import
import matplotlib.pyplot as plt  # only after the backend is chosen

SUBJECTS = ("seed", "dlops")
PEER = "seed"  # ratios are dlops / seed: above 1 is more throughput, or more latency
LATENCIES = ("p50_ms", "p95_ms", "p99_ms")


def summarise(runs: list[dict[str, Any]], concurrencies: list[int]) -> list[dict[str, Any]]:
    """Per subject and concurrency: medians across rounds (and the rps spread, to judge noise)."""
    summary = []
    for subject in SUBJECTS:
        for concurrency in concurrencies:
            mine = [
                run
                for run in runs
                if run["subject"] == subject and run["concurrency"] == concurrency
            ]
            if not mine:
                continue
            rps = [run["rps"] for run in mine]
            row = {
                "subject": subject,
                "concurrency": concurrency,
                "rounds": len(mine),
                "rps": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "sent": sum(run["sent"] for run in mine),
                "non_200": sum(run["non_200"] for run in mine),
            }
            row.update({key: statistics.median(run[key] for run in mine) for key in LATENCIES})
            summary.append(row)
    return summary


def ratios(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dlops / seed for each concurrency both were measured at, computed two ways.

    ``rps`` and the latencies are ratios of the medians across rounds. ``paired_rps`` and
    ``paired_p99_ms`` are the medians of the per-round ratios: within one round the two subjects
    ran back to back, so a slow spell of the machine mostly cancels out of those.
    """
    by_key = {(row["subject"], row["concurrency"]): row for row in summary}
    by_run = {(run["subject"], run["concurrency"], run["round"]): run for run in runs}
    result = []
    for (subject, concurrency), row in by_key.items():
        peer = by_key.get((PEER, concurrency))
        if subject == PEER or peer is None:
            continue
        pairs = [
            (run, by_run[(PEER, concurrency, run["round"])])
            for (name, level, _), run in by_run.items()
            if name == subject and level == concurrency
        ]
        ratio = {"subject": subject, "concurrency": concurrency, "rps": row["rps"] / peer["rps"]}
        ratio.update({key: row[key] / peer[key] for key in LATENCIES})
        ratio["paired_rps"] = statistics.median(
            mine["rps"] / theirs["rps"] for mine, theirs in pairs
        )
        ratio["paired_p99_ms"] = statistics.median(
            mine["p99_ms"] / theirs["p99_ms"] for mine, theirs in pairs
        )
        result.append(ratio)
    return result


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _load_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | concurrency | rps (median) | rps min–max | p50 ms | p95 ms | p99 ms "
        "| non-200 / sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in data["load"]["summary"]:
        lines.append(
            f"| {row['subject']} | {row['concurrency']} | {_fmt(row['rps'], 0)} "
            f"| {_fmt(row['rps_min'], 0)}–{_fmt(row['rps_max'], 0)} "
            f"| {_fmt(row['p50_ms'], 2)} | {_fmt(row['p95_ms'], 2)} | {_fmt(row['p99_ms'], 2)} "
            f"| {row['non_200']} / {row['sent']} |"
        )
    for row in data["load"]["ratios"]:
        lines.append(
            f"| **{row['subject']} / {PEER}** | {row['concurrency']} | **{row['rps']:.2f}×** | "
            f"| {row['p50_ms']:.2f}× | {row['p95_ms']:.2f}× | **{row['p99_ms']:.2f}×** | |"
        )
    for row in data["load"]["ratios"]:
        lines.append(
            f"| {row['subject']} / {PEER}, paired by round | {row['concurrency']} "
            f"| {row['paired_rps']:.2f}× | | | | {row['paired_p99_ms']:.2f}× | |"
        )
    lines += [
        "",
        "Ratio rows: ratios of the medians above. Paired rows: the median of each round's ratio "
        "(the two subjects ran back to back), less sensitive to the machine's slow spells.",
    ]
    return lines


def _memory_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| subject | process | pid | RSS MiB | PSS MiB |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for subject in SUBJECTS:
        processes = data["memory"][subject]
        for process in processes:
            lines.append(
                f"| {subject} | {process['role']} | {process['pid']} "
                f"| {_fmt(process['rss_mib'])} | {_fmt(process['pss_mib'])} |"
            )
        rss = sum(process["rss_mib"] for process in processes)
        pss = sum(process["pss_mib"] for process in processes)
        lines.append(f"| **{subject}** | **whole tree** | | **{_fmt(rss)}** | **{_fmt(pss)}** |")
    return lines


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    settings, machine = data["settings"], data["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    ceiling, cold, image = data["ceiling"]["median"], data["cold_start"], data["image_size"]
    dlops_env = " ".join(f"{k}={v}" for k, v in settings["dlops_env"].items()) or "(none)"
    lines = [
        "# dlops against the seed article's FastAPI app",
        "",
        f"`{data['command']}` on {machine['date']}, {data['wall_seconds']:.0f} s wall time.",
        f"Machine: {machine['cpu_model']}, {machine['cpus_usable']} usable cores, "
        f"{machine['memory_gib']} GiB, Python {machine['python']}; {packages}; "
        f"hey {machine['hey']}; commit {machine['git_commit'] or '(none)'}"
        f"{' with local changes' if machine['git_dirty'] else ''}. 1-minute load average "
        f"{machine['load_average_1m_at_start']:.2f} at the start, "
        f"{machine['load_average_1m_at_end']:.2f} at the end (this run's own processes count).",
        "",
        f"Load: hey POSTs `{settings['image']}` ({settings['image_bytes']} bytes) as the "
        f"multipart field `file` to `/predict`, {settings['requests']} requests per measurement "
        f"over keep-alive connections, after {settings['warmup']} warm-up requests per server. "
        f"{settings['rounds']} round(s); in each round every concurrency runs every subject in "
        "turn (order alternating), so drift hits both alike; figures are medians across rounds. "
        "hey runs on the same cores as the servers. rps counts 200 answers only; latencies "
        "have hey's 0.1 ms resolution.",
        f"Subjects: seed = `uvicorn bench.seed_app:app --workers {settings['seed_workers']}`; "
        f"dlops = `bentoml serve` as `make serve` starts it, extra environment: {dlops_env}.",
        "",
        "## Throughput and latency",
        "",
        *_load_table(data),
        "",
        "## Ceiling: the service's code in one process, no HTTP",
        "",
        "| what | images/s |",
        "| --- | ---: |",
        "| decode + preprocess + infer, one image per model call "
        f"| {_fmt(ceiling['single_images_per_s'], 0)} |",
        f"| the same, {data['ceiling']['batch']} images per model call "
        f"| {_fmt(ceiling['batched_images_per_s'], 0)} |",
        "",
        f"One image: decode + preprocess {_fmt(ceiling['preprocess_us'], 0)} µs, inference "
        f"{_fmt(ceiling['infer_us'], 0)} µs (medians of {len(data['ceiling']['rounds'])} "
        "rounds, best of 3 loops each).",
        "",
        "## Cold start: process start to the first 200",
        "",
        "| subject | probe | median s | samples s |",
        "| --- | --- | ---: | --- |",
    ]
    for subject in SUBJECTS:
        samples = cold[subject]["samples_s"]
        lines.append(
            f"| {subject} | GET {cold[subject]['probe']} | {statistics.median(samples):.2f} "
            f"| {', '.join(f'{s:.2f}' for s in samples)} |"
        )
    lines += [
        "",
        "## Memory after the load",
        "",
        "RSS counts shared pages in every process that maps them; PSS splits them, so its sum is "
        "the tree's real footprint.",
        "",
        *_memory_table(data),
        "",
        "## Container image",
        "",
        f"`{image['tag']}`: "
        + (
            f"{_fmt(image['mib'])} MiB ({image['engine']})"
            if image["bytes"] is not None
            else f"not measured ({image['note']})"
        ),
        "",
    ]
    path.write_text("\n".join(lines))


def write_plot(path: Path, data: dict[str, Any]) -> None:
    summary = data["load"]["summary"]
    concurrencies = sorted({row["concurrency"] for row in summary})
    figure, (throughput, tail) = plt.subplots(1, 2, figsize=(11, 4.5))
    for subject in SUBJECTS:
        rows = sorted(
            (row for row in summary if row["subject"] == subject), key=lambda r: r["concurrency"]
        )
        x = [row["concurrency"] for row in rows]
        (line,) = throughput.plot(x, [row["rps"] for row in rows], marker="o", label=subject)
        throughput.fill_between(
            x,
            [row["rps_min"] for row in rows],
            [row["rps_max"] for row in rows],
            color=line.get_color(),
            alpha=0.2,
        )
        tail.plot(x, [row["p99_ms"] for row in rows], marker="o", label=subject)
    ceiling = data["ceiling"]["median"]
    throughput.axhline(
        ceiling["single_images_per_s"], color="grey", linestyle="--", label="ceiling, 1 image"
    )
    throughput.axhline(
        ceiling["batched_images_per_s"],
        color="grey",
        linestyle=":",
        label=f"ceiling, batch of {data['ceiling']['batch']}",
    )
    throughput.set(yscale="log", ylabel="200 answers per second (median, min–max shaded)")
    throughput.set_title("Throughput")
    tail.set(ylabel="p99 latency, ms (median)")
    tail.set_title("p99 latency")
    for axes in (throughput, tail):
        axes.set_xscale("log", base=2)
        axes.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axes.set_xlabel("concurrent connections")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(f"dlops vs seed, {data['machine']['cpu_model']}, {data['machine']['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(directory: Path, data: dict[str, Any]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "latest.json", directory / "latest.md", directory / "latest.png"]
    write_json(paths[0], data)
    write_markdown(paths[1], data)
    write_plot(paths[2], data)
    return paths
