"""Alternating rounds: the order subjects take turns in, one record per measurement, and the
medians, spreads and ratios across rounds.

Subjects measured back to back within a round see the same state of the machine, so a ratio
taken within each round ("paired") is less sensitive to its slow spells than a ratio of medians.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from bench.load import LoadResult

T = TypeVar("T")
Run = dict[str, Any]
LATENCIES = ("p50_ms", "p95_ms", "p99_ms")


def rotated(items: list[T], by: int) -> list[T]:
    # Rotating the order each round keeps any subject from always following another.
    shift = by % len(items)
    return items[shift:] + items[:shift]


def run_row(round_number: int, result: LoadResult, **fields: Any) -> Run:
    """One hey measurement as recorded: its round, what the study says of it, hey's figures."""
    return {"round": round_number, **fields, **dataclasses.asdict(result)}


def grouped(runs: Iterable[Run], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Run]]:
    """The runs by the values of ``keys``, in the order each group first appears."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run[key] for key in keys), []).append(run)
    return groups


def spread(runs: list[Run], latencies: Sequence[str] = LATENCIES) -> dict[str, Any]:
    """Across rounds: the median rps and its range, the median latencies, and every request
    that was sent and not answered 200."""
    rps = [run["rps"] for run in runs]
    return {
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        **{key: statistics.median(run[key] for run in runs) for key in latencies},
        "non_200": sum(run["non_200"] for run in runs),
        "sent": sum(run["sent"] for run in runs),
    }


def paired(mine: list[Run], theirs: list[Run], value: Callable[[Run], float]) -> float:
    """The median, over the rounds both ran, of each round's ``value`` ratio, mine / theirs."""
    by_round = {run["round"]: run for run in theirs}
    return statistics.median(
        value(run) / value(by_round[run["round"]]) for run in mine if run["round"] in by_round
    )
