"""A worker killed under load (the OOM killer, a crash in native code) is replaced."""

from __future__ import annotations

import os
import signal
import threading
import time
from itertools import pairwise
from pathlib import Path

import httpx
import psutil

from tests.conftest import FIXTURES, Server

CLIENTS = 8
RECOVERY_LIMIT_SECONDS = 30  # a bound for a hung test, not a speed target
THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()


def worker_processes(server: Server) -> list[psutil.Process]:
    arbiter = psutil.Process(server.process.pid)
    return [
        p
        for p in arbiter.children(recursive=True)
        if "_bentoml_impl.worker" in " ".join(p.cmdline())
    ]


def test_a_killed_worker_is_restarted_and_requests_are_answered_again(
    model_home: Path, tmp_path: Path
) -> None:
    server = Server(model_home, tmp_path / "serve.log")
    try:
        server.wait_ready()
        (victim,) = worker_processes(server)
        answered_after_kill: list[float] = []
        failed: list[str] = []
        stop = threading.Event()
        killed_at: list[float] = []

        def client_loop() -> None:
            with httpx.Client(base_url=server.url, timeout=RECOVERY_LIMIT_SECONDS) as client:
                while not stop.is_set():
                    try:
                        answer = client.post("/predict", files={"file": ("3.png", THREE)})
                    except httpx.TransportError as error:
                        failed.append(repr(error))  # in flight on the killed worker
                        continue
                    assert answer.status_code == 200, answer.text
                    if killed_at:
                        answered_after_kill.append(time.monotonic() - killed_at[0])

        clients = [threading.Thread(target=client_loop) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(1.0)
        killed_at.append(time.monotonic())
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + RECOVERY_LIMIT_SECONDS
        while time.monotonic() < deadline and len(answered_after_kill) < 50:
            time.sleep(0.1)
        stop.set()
        for client in clients:
            client.join(timeout=RECOVERY_LIMIT_SECONDS)

        assert server.process.poll() is None, server.log()  # the arbiter kept running
        (replacement,) = worker_processes(server)
        assert replacement.pid != victim.pid
        assert len(answered_after_kill) >= 50, (failed, server.log())
        # Only requests on the killed worker's own connections may fail; the others wait in
        # the listening socket's queue and are answered by the replacement.
        assert len(failed) <= CLIENTS, failed
        times = sorted(answered_after_kill)
        outage = max(later - earlier for earlier, later in pairwise(times))
        print(f"no answers for {outage:.1f} s after SIGKILL; {len(failed)} in-flight lost")
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()
