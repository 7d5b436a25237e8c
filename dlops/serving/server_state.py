"""What the processes of one `bentoml serve` share: a folder, made by the arbiter for its workers.

- The models every worker should serve (``desired.json``, with a generation number): a worker that
  changes its models through the repository extension publishes them here, every worker applies
  them within SYNC_SECONDS and says so in its own ``worker-<pid>.json``, and the call that made
  the change answers once every live worker has. A worker started later (one replaced after a
  crash) serves what was published, not the start-up list.
- A worker whose start-up models fail to load writes why in ``failure`` and stops the arbiter:
  the server then exits non-zero with that reason, as Triton does with --exit-on-error.

No serving framework here: the arbiter is the worker's parent process.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set by the arbiter for its workers: "<arbiter pid>:<folder>".
STATE_VARIABLE = "DLOPS_SERVER_STATE"
SYNC_SECONDS = 0.25
FAILURE_FILE = "failure"
DESIRED_FILE = "desired.json"

Models = list[tuple[str, str]]  # (name, version)


@dataclass(frozen=True)
class Published:
    """The models every worker should serve, the one answering /predict, and the change's
    number."""

    generation: int
    models: Models
    default: str


def server_folder() -> Path:
    """The folder of this server: made here if this process is the arbiter (the first of the
    tree to import the service), inherited if it is one of its workers."""
    inherited = os.environ.get(STATE_VARIABLE, "")
    owner, _, folder = inherited.partition(":")
    if folder and owner == str(os.getppid()) and Path(folder).is_dir():
        return Path(folder)
    path = Path(tempfile.mkdtemp(prefix="dlops-server-"))
    os.environ[STATE_VARIABLE] = f"{os.getpid()}:{path}"
    atexit.register(_exit_with_a_workers_failure, path)
    return path


def _exit_with_a_workers_failure(folder: Path) -> None:
    """At the arbiter's exit: non-zero, with the reason, if a worker stopped it."""
    failure = folder / FAILURE_FILE
    reason = failure.read_text() if failure.is_file() else None
    shutil.rmtree(folder, ignore_errors=True)
    if reason is not None:
        sys.stderr.write(f"dlops: {reason}; the server stopped\n")
        sys.stderr.flush()
        os._exit(1)  # atexit cannot change the exit status otherwise


def stop_server(folder: Path, reason: str) -> None:
    """Record why, and stop the arbiter (and so every worker): from a worker."""
    (folder / FAILURE_FILE).write_text(reason)
    os.kill(os.getppid(), signal.SIGTERM)


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(payload))
    temporary.replace(path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedModels:
    """The models every worker of the server should serve, and how far each worker has got."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._status = folder / f"worker-{os.getpid()}.json"

    @contextmanager
    def changing(self) -> Iterator[None]:
        """One repository change at a time across the workers (blocks: call off the loop)."""
        with (self.folder / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def desired(self) -> Published | None:
        """What was last published, or None before any change."""
        published = _read(self.folder / DESIRED_FILE)
        if published is None:
            return None
        models = [(str(name), str(version)) for name, version in published["models"]]
        return Published(int(published["generation"]), models, str(published["default"]))

    def publish(self, models: Models, default: str) -> int:
        """Publish the models every worker should serve, and which answers /predict (hold
        ``changing``); the generation."""
        current = self.desired()
        generation = (current.generation if current else 0) + 1
        payload = {
            "generation": generation,
            "models": [list(model) for model in models],
            "default": default,
        }
        _write_atomically(self.folder / DESIRED_FILE, payload)
        return generation

    def report(self, generation: int, failures: dict[str, str]) -> None:
        """This worker serves what ``generation`` published, but for ``failures`` (name: why)."""
        _write_atomically(self._status, {"generation": generation, "failures": failures})

    def wait_for_workers(self, workers: int, generation: int, timeout: float) -> dict[str, str]:
        """Wait until ``workers`` live workers have applied ``generation`` (one still loading
        its models at start has not said so yet); what failed where ("worker <pid>: <name>":
        why), or TimeoutError saying how many are behind."""
        deadline = time.monotonic() + timeout
        while True:
            behind, caught_up, failures = [], 0, {}
            for path in self.folder.glob("worker-*.json"):
                pid = int(path.stem.removeprefix("worker-"))
                status = _read(path)
                if not _alive(pid):
                    path.unlink(missing_ok=True)
                    continue
                if status is None or status["generation"] < generation:
                    behind.append(pid)
                    continue
                caught_up += 1
                for name, why in status["failures"].items():
                    failures[f"worker {pid}: {name}"] = why
            if not behind and caught_up >= workers:
                return failures
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{workers - caught_up} of {workers} workers have not applied the change yet"
                )
            time.sleep(SYNC_SECONDS)
