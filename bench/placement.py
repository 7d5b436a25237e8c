"""Where the servers under test and the load generator run: disjoint sets of CPUs when there are
enough, so that a server's figures are its own cores' work, not a share of the load generator's.

``pinned_to(cpus)`` is what ``taskset -c CPUS`` does, as a ``preexec_fn``: the process, and every
process it starts (BentoML's workers, uvicorn's), may run only on those CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

# hey's share: at the HTTP floor's ~18k rps on this kind of machine it keeps one core busy.
MIN_LOAD_CPUS = 1


@dataclass(frozen=True)
class Placement:
    """The CPUs of the servers under test and of the load generator; None for both: unpinned."""

    server: tuple[int, ...] | None
    load: tuple[int, ...] | None
    note: str

    @property
    def pinned(self) -> bool:
        return self.server is not None


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def place(workers: int, pin: bool = True, cpus: list[int] | None = None) -> Placement:
    """``workers`` cores for the servers (one per worker) and the rest for the load generator.

    Unpinned, with a note that says why, when pinning is off or there are too few cores.
    """
    cpus = usable_cpus() if cpus is None else cpus
    if not pin:
        return Placement(None, None, "unpinned (--no-pin): servers and hey share all cores")
    if len(cpus) < workers + MIN_LOAD_CPUS:
        return Placement(
            None,
            None,
            f"unpinned: {workers} worker(s) and the load generator need {workers + 1} cores, "
            f"this machine has {len(cpus)}; servers and hey share them",
        )
    server, load = tuple(cpus[:workers]), tuple(cpus[workers:])
    return Placement(server, load, f"servers on CPU {_span(server)}, hey on CPU {_span(load)}")


def _span(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus))


def pinned_to(cpus: tuple[int, ...] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``cpus``; None (no pinning) when ``cpus`` is."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)
