"""Graceful shutdown as Heroku does it: SIGTERM to every process while clients are mid-request.

Every request the server accepted must get its answer; after the signal, new connections are
refused (not reset, not left hanging), and the whole process tree exits well within the 30 s
Heroku waits before SIGKILL.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import FIXTURES, Server

CLIENTS = 32
LOAD_BEFORE_SIGNAL_SECONDS = 2.0
HEROKU_KILL_SECONDS = 30
THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()


@dataclass
class Outcomes:
    """What each attempt of the clients came to, counted by kind."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.counts[kind] += 1
            if detail and len(self.failures) < 20:
                self.failures.append(detail)


def refused(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def client_loop(url: str, stop: threading.Event, outcomes: Outcomes) -> None:
    """Fresh connection per request, as browsers and Heroku's router open them."""
    while not stop.is_set():
        try:
            with httpx.Client(timeout=HEROKU_KILL_SECONDS) as client:
                answer = client.post(f"{url}/predict", files={"file": ("3.png", THREE)})
        except httpx.TransportError as error:
            if refused(error):
                outcomes.add("refused")
                time.sleep(0.01)
            else:
                outcomes.add("dropped", f"{type(error).__name__}: {error!r}")
            continue
        if answer.status_code == 200 and answer.json()["label"] == "3":
            outcomes.add("answered")
        else:
            outcomes.add("wrong", f"{answer.status_code} {answer.text[:200]}")


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_to_every_process_answers_accepted_requests_and_refuses_new_ones(
    model_home: Path, tmp_path: Path, workers: str
) -> None:
    server = Server(model_home, tmp_path / "serve.log", DLOPS_WORKERS=workers)
    try:
        server.wait_ready()
        tree = process_tree(server.process.pid)
        assert len(tree) >= 1 + int(workers), tree
        outcomes = Outcomes()
        stop = threading.Event()
        clients = [
            threading.Thread(target=client_loop, args=(server.url, stop, outcomes))
            for _ in range(CLIENTS)
        ]
        for client in clients:
            client.start()
        time.sleep(LOAD_BEFORE_SIGNAL_SECONDS)
        answered_before_signal = outcomes.counts["answered"]
        signalled = time.monotonic()
        for process in tree:  # what Heroku's dyno manager does: every process, at once
            os.kill(process.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=HEROKU_KILL_SECONDS)
        exited_after = time.monotonic() - signalled
        time.sleep(0.5)  # clients keep trying: these attempts must be refused
        stop.set()
        for client in clients:
            client.join(timeout=HEROKU_KILL_SECONDS)
        print(
            f"workers={workers}: {dict(outcomes.counts)}; tree exited {exited_after:.2f} s "
            f"after SIGTERM; {answered_before_signal} answered before it"
        )
        assert not alive, f"still running {HEROKU_KILL_SECONDS} s after SIGTERM: {alive}"
        assert answered_before_signal > 0
        assert outcomes.counts["dropped"] == 0, outcomes.failures
        assert outcomes.counts["wrong"] == 0, outcomes.failures
        assert outcomes.counts["refused"] > 0  # new connections were refused, not queued
        assert exited_after < 10, server.log()
    finally:
        server.stop()
