"""A worker's memory: what it holds now, what its requests may add, and giving freed memory back.

``MemoryBudget`` is the bytes that heavy work in flight (decoding a large image, parsing a large
JSON tensor) may hold at once: each piece of work reserves its estimated cost before it starts
and waits, on its worker thread, while the budget is spent. Work that costs more than the whole
budget is refused. No serving framework here.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIB = 1024 * 1024
# How often a thread waiting for budget looks whether its request was abandoned.
WAIT_POLL_SECONDS = 0.05


class Abandoned(Exception):
    """The request this work was for has been answered already (its deadline passed)."""


class OverBudget(Exception):
    """The work alone needs more than the whole budget."""

    def __init__(self, needed: int, total: int) -> None:
        super().__init__(f"{needed} bytes needed, {total} in the budget")
        self.needed = needed
        self.total = total


class MemoryBudget:
    """Bytes shared by the work in flight, reserved before the work and released after it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = threading.Condition()

    def resize(self, total: int) -> None:
        """A new total (models loaded or unloaded); work already holding bytes keeps them."""
        with self._changed:
            self.total = total
            self._changed.notify_all()

    @contextmanager
    def hold(self, amount: int, abandoned: threading.Event) -> Iterator[None]:
        """Reserve ``amount`` bytes for the block, waiting while others hold the budget.

        Raises OverBudget at once when ``amount`` exceeds the total, and Abandoned if
        ``abandoned`` is set while it waits.
        """
        if amount > self.total:
            raise OverBudget(amount, self.total)
        with self._changed:
            while self.used + amount > self.total:
                if abandoned.is_set():
                    raise Abandoned()
                self._changed.wait(WAIT_POLL_SECONDS)
            self.used += amount
        try:
            yield
        finally:
            with self._changed:
                self.used -= amount
                self._changed.notify_all()


def resident_bytes() -> int:
    """This process's resident set size (Linux; 0 where /proc is not there)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak_resident() -> bool:
    """Start this process's peak resident set size again from what it holds now (Linux 4.0's
    ``/proc/self/clear_refs``); False where that cannot be done (then the peak is not known)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_bytes() -> int:
    """This process's peak resident set size since the last reset (0 where it is not known)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Allocator:
    """glibc's malloc, told to give freed memory back to the system (no-ops elsewhere).

    glibc raises its mmap threshold up to 32 MiB after a large block is freed, so the next large
    images and arrays come from the heap, whose free space it keeps for them (no page faults);
    ``trim`` returns that free space to the system, in every arena.
    """

    def __init__(self) -> None:
        # The symbols the interpreter is linked with: glibc's malloc where Python runs on glibc.
        # (ctypes.util.find_library would run ldconfig in a subprocess.)
        libc = ctypes.CDLL(None)
        self._libc = libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None

    def trim(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)
