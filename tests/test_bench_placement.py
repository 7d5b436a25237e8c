"""bench/placement.py and the scaling figures of bench/report.py: pure functions, in-process."""

from __future__ import annotations

import os

import pytest

from bench.placement import pinned_to, place
from bench.report import DLOPS, LEAN, scaling


def test_one_worker_gets_one_core_and_the_load_generator_the_rest() -> None:
    placement = place(1, cpus=[0, 1, 2, 3])
    assert (placement.server, placement.load) == ((0,), (1, 2, 3))
    assert placement.pinned and "CPU 0" in placement.note


def test_too_few_cores_or_no_pinning_leave_everything_unpinned_and_say_why() -> None:
    crowded = place(2, cpus=[0, 1])
    assert not crowded.pinned and crowded.load is None
    assert "need 3 cores" in crowded.note and "has 2" in crowded.note
    assert not place(1, pin=False, cpus=[0, 1, 2]).pinned


def test_pinned_to_restricts_the_calling_process() -> None:
    assert pinned_to(None) is None
    before = os.sched_getaffinity(0)
    first = min(before)
    try:
        pin = pinned_to((first,))
        assert pin is not None
        pin()
        assert os.sched_getaffinity(0) == {first}
    finally:
        os.sched_setaffinity(0, before)


def _row(subject: str, workers: int, rps: float) -> dict[str, object]:
    return {"subject": subject, "workers": workers, "concurrency": 64, "rps": rps, "p99_ms": 1.0}


def test_efficiency_is_rps_at_w_over_w_times_rps_at_one() -> None:
    rows = scaling([_row(DLOPS, 1, 1000.0), _row(DLOPS, 4, 3000.0), _row(LEAN, 4, 900.0)])
    by_key = {(row["subject"], row["workers"]): row for row in rows}
    assert by_key[(DLOPS, 1)]["efficiency"] == pytest.approx(1.0)
    assert by_key[(DLOPS, 4)]["efficiency"] == pytest.approx(0.75)
    assert by_key[(LEAN, 4)]["efficiency"] is None  # no 1-worker figure to compare with
