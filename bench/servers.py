"""Start, probe, measure and stop the HTTP subjects: `bentoml serve` (dlops, the stock service),
the seed FastAPI apps and the floors under uvicorn, each in a throwaway BentoML home.

Each server runs in a session of its own so that it can be stopped as a group, and every process
of its tree is remembered before it is stopped: BentoML's workers start their own sessions, so a
signal to the arbiter's group alone would leave them running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.placement import pinned_to
from bench.study import log
from dlops.model.spec import SPEC_FILE_NAME

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "binary_classifier_3.onnx"
HOST = "127.0.0.1"  # loopback only: nothing here is meant to be reachable from elsewhere
STARTUP_SECONDS = 120
STOP_SECONDS = 15
# Cold start is measured to this resolution; a tighter loop would steal CPU from the start-up.
POLL_SECONDS = 0.05
PEAK_SAMPLE_SECONDS = 0.02  # a peak of memory lasts as long as a large decode: tens of ms
# The floors of bench/floors.py, as subjects.
FLOOR, LEAN = "floor", "lean"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None while nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str
    rss_mib: float
    pss_mib: float  # shared pages split between the processes that map them: sums to the truth
    command: str


class Server:
    """One server process tree, started from the repository root with its own environment."""

    def __init__(
        self,
        subject: str,
        argv: list[str],
        env: dict[str, str],
        port: int,
        ready_path: str,
        log_path: Path,
        root_role: str,
        cwd: Path = ROOT,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.subject = subject
        self.cpus = cpus  # the CPUs its whole tree may run on (None: any), see bench/placement.py
        self.cwd = cwd  # the source tree it serves: this checkout unless a baseline's
        self.argv = argv
        self.env = env
        self.url = f"http://{HOST}:{port}"
        self.ready_path = ready_path
        self.log_path = log_path
        self.root_role = root_role
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pinned_to(self.cpus),
            )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> float:
        """Block until the ready path answers 200; return the seconds since the process started."""
        assert self.process is not None, "start() first"
        deadline = self.started_at + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.subject} exited with {self.process.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            if http_status(self.url + self.ready_path) == 200:
                return time.perf_counter() - self.started_at
            time.sleep(POLL_SECONDS)
        raise RuntimeError(
            f"{self.subject} did not answer 200 on {self.ready_path} within {timeout:.0f} s:\n"
            f"{self.log_tail()}"
        )

    def _tree(self) -> list[psutil.Process]:
        assert self.process is not None
        return process_tree(self.process.pid)

    def samples(self) -> list[ProcessSample]:
        """A cheap look at every process of the tree (no PSS), for sampling under load."""
        assert self.process is not None
        return sample_tree(self.process.pid, self.root_role)

    def tree_rss_mib(self) -> float:
        return sum(sample.rss_mib for sample in self.samples())

    def cpu_seconds(self) -> float:
        """CPU time (user + system, its reaped children's included) of every process of the
        tree so far."""
        assert self.process is not None
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def serving_pid(self) -> int:
        """The process that answers requests: BentoML's (first) worker, or the root itself
        (uvicorn with one worker)."""
        workers = [sample.pid for sample in self.samples()[1:] if sample.role == "worker"]
        assert self.process is not None
        return workers[0] if workers else self.process.pid

    def memory(self) -> list[ProcessMemory]:
        """RSS and PSS of every process in the tree; the first entry is the root."""
        measured = []
        for index, process in enumerate(self._tree()):
            try:
                info = process.memory_full_info()
                command = " ".join(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            role = self.root_role if index == 0 else _child_role(command)
            measured.append(
                ProcessMemory(
                    pid=process.pid,
                    role=role,
                    rss_mib=info.rss / 2**20,
                    pss_mib=info.pss / 2**20,
                    command=command[:160],
                )
            )
        return measured

    def stop(self) -> None:
        """Stop the whole tree: the group first (graceful), then any child that outlived it."""
        if self.process is None:
            return
        tree = self._tree()
        pid = self.process.pid
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.process.wait()
        children = tree[1:]
        for child in children:
            with suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=STOP_SECONDS)
        for child in alive:
            with suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(alive, timeout=STOP_SECONDS)
        self.process = None


@dataclass(frozen=True)
class ProcessSample:
    """One process of a server tree at one moment, split the way /proc/PID/status splits RSS."""

    pid: int
    role: str
    rss_mib: float
    anon_mib: float  # RssAnon: heaps and anonymous maps, where a leak or fragmentation shows
    file_mib: float  # RssFile: mapped files (libraries, the model, Prometheus' multiprocess files)
    shmem_mib: float  # RssShmem: shared memory and files on tmpfs mapped into the process
    threads: int
    open_files: int  # file descriptors: sockets, temporary files, mapped metrics files


def process_tree(root_pid: int) -> list[psutil.Process]:
    """The root and all its descendants. BentoML's workers start sessions (and process groups)
    of their own, so the group of the root would miss them: the parent links do not."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class PeakRss:
    """While it is entered: the RSS of the tree rooted at ``root_pid`` sampled every ``period``
    seconds on a thread; its peak, and each process's."""

    def __init__(
        self,
        root_pid: int,
        roles: dict[int, str] | None = None,
        period: float = PEAK_SAMPLE_SECONDS,
    ) -> None:
        self.root = root_pid
        self.roles = roles or {}
        self.period = period
        self.peak_tree_mib = 0.0
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @classmethod
    def of(cls, server: Server) -> PeakRss:
        assert server.process is not None, "start() first"
        roles = {sample.pid: sample.role for sample in server.samples()}
        return cls(server.process.pid, roles)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            for process in process_tree(self.root):
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                total += rss
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0.0), rss)
            self.peak_tree_mib = max(self.peak_tree_mib, total)
            self._stop.wait(self.period)

    def result(self) -> dict[str, Any]:
        return {
            "peak_tree_rss_mib": round(self.peak_tree_mib, 1),
            "peak_by_process": [
                {"pid": pid, "role": self.roles.get(pid, "new"), "peak_rss_mib": round(peak, 1)}
                for pid, peak in self.peaks.items()
            ],
        }


def _status_mib(pid: int) -> dict[str, float]:
    # psutil has no RssAnon/RssFile split; Linux writes it in kB in /proc/PID/status.
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def sample_tree(root_pid: int, root_role: str) -> list[ProcessSample]:
    """RSS (split into anonymous, file and shared memory), threads and descriptors of every
    process of the tree rooted at ``root_pid``; the first entry is the root."""
    sampled = []
    for index, process in enumerate(process_tree(root_pid)):
        try:
            with process.oneshot():
                rss = process.memory_info().rss / 2**20
                threads = process.num_threads()
                open_files = process.num_fds()
                command = " ".join(process.cmdline())
            split = _status_mib(process.pid)
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue  # it exited between the walk and the look
        sampled.append(
            ProcessSample(
                pid=process.pid,
                role=root_role if index == 0 else _child_role(command),
                rss_mib=rss,
                anon_mib=split.get("RssAnon", float("nan")),
                file_mib=split.get("RssFile", float("nan")),
                shmem_mib=split.get("RssShmem", float("nan")),
                threads=threads,
                open_files=open_files,
            )
        )
    return sampled


def _child_role(command: str) -> str:
    # BentoML names its workers on the command line; uvicorn --workers N spawns them through
    # multiprocessing, which also starts a resource tracker.
    if "resource_tracker" in command:
        return "resource tracker"
    if "worker" in command or "spawn_main" in command:
        return "worker"
    return "child"


def _base_env() -> dict[str, str]:
    # The caller's DLOPS_* settings must not leak into either subject unasked.
    return {key: value for key, value in os.environ.items() if not key.startswith("DLOPS_")}


def dlops_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `make serve` gives `bentoml serve`, plus the caller's extra settings."""
    env = _base_env()
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra or {})
    return env


def import_model(
    home: Path,
    model: Path = MODEL,
    name: str | None = None,
    tree: Path = ROOT,
    flags: Sequence[str] = (),
) -> Path:
    """Import ``model`` (the committed digit model by default) into ``home`` the way `make import`
    does, as ``name`` if given, with the importer's ``flags``; returns the model store entry's
    directory (its ONNX file and spec.json, named by its version), read from the importer's last
    line, ``imported: NAME:VERSION``. ``tree``: the source tree whose import_model.py runs (a
    baseline's, see :func:`baseline_tree`)."""
    argv = [sys.executable, str(tree / "import_model.py"), str(model)]
    result = subprocess.run(
        [*argv, *(["--name", name] if name else []), *flags],
        cwd=tree,
        env=dlops_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if result.returncode != 0:
        raise RuntimeError(f"import_model.py failed:\n{result.stdout}{result.stderr}")
    if tree != ROOT:
        return home  # an older importer: its output and store layout may differ; not read
    # "imported: TAG" or, when the store already holds it, "already imported, unchanged: TAG".
    lines = result.stdout.strip().splitlines()
    tag = lines[-1].rpartition(": ")[2].strip() if lines else ""
    model_name, _, version = tag.partition(":")
    entry = home / "models" / model_name / version
    if not version or not (entry / SPEC_FILE_NAME).is_file():
        raise RuntimeError(f"import_model.py printed no usable tag ({tag!r}):\n{result.stdout}")
    return entry


def throwaway_home(base: Path, scratch: Path, slug: str) -> Path:
    """A BentoML home of its own for one server, with a copy of ``base``'s model store (a few
    kB): `bentoml serve` empties its home's prometheus_multiproc_dir when it starts, under the
    feet of a running neighbour that shared it."""
    home = scratch / f"home-{slug}"
    shutil.copytree(base / "models", home / "models")
    return home


def dlops_server(
    home: Path,
    log_dir: Path,
    extra_env: dict[str, str],
    tree: Path = ROOT,
    subject: str = "dlops",
    cpus: tuple[int, ...] | None = None,
) -> Server:
    """`bentoml serve` as `make serve` runs it; bound to loopback, which make leaves to BentoML.

    ``tree``: the source tree it serves (a baseline's, see :func:`baseline_tree`)."""
    port = free_port()
    return Server(
        subject=subject,
        argv=[str(BIN / "bentoml"), "serve", "--host", HOST, "--port", str(port)],
        env=dlops_env(home, extra_env),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / f"{subject.replace('@', '-')}-{port}.log",
        root_role="arbiter",
        cwd=tree,
        cpus=cpus,
    )


MAKE_SERVE = "make serve"


def make_serve_server(home: Path, log_dir: Path, extra_env: dict[str, str]) -> Server:
    """`make serve` as a user types it on a set-up checkout: make, the import (a no-op when the
    model is unchanged) and `bentoml serve`, all counted in its cold start."""
    port = free_port()
    return Server(
        subject=MAKE_SERVE,
        argv=["make", "--no-print-directory", "serve", f"PORT={port}"],
        env=dlops_env(home, extra_env),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / f"make-serve-{port}.log",
        root_role="make",
    )


def baseline_tree(ref: str, directory: Path) -> tuple[Path, str]:
    """The repository's files at ``ref`` (`git archive`, nothing of this checkout touched),
    unpacked into ``directory``; returns it and the commit ``ref`` names."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        raise SystemExit(f"--baseline {ref}: not a commit of this repository")
    directory.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "archive", commit.stdout.strip()], cwd=ROOT, stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(directory)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {ref} failed")
    return directory, commit.stdout.strip()


def stock_server(home: Path, log_dir: Path, extra_env: dict[str, str]) -> Server:
    """bench/stock_service.py, a service written as BentoML's examples write one, under
    `bentoml serve` with the same model store and environment as dlops."""
    port = free_port()
    service = "bench.stock_service:StockDigitClassifier"
    return Server(
        subject="stock",
        argv=[str(BIN / "bentoml"), "serve", service, "--host", HOST, "--port", str(port)],
        env=dlops_env(home, extra_env),
        port=port,
        ready_path="/readyz",
        log_path=log_dir / f"stock-{port}.log",
        root_role="arbiter",
    )


def seed_server(
    log_dir: Path,
    workers: int,
    app: str = "bench.seed_app:app",
    extra_env: dict[str, str] | None = None,
    subject: str = "seed",
    cpus: tuple[int, ...] | None = None,
    access_log: bool = True,
) -> Server:
    """The seed app under uvicorn as the article serves it; /docs is its first page to answer.

    ``access_log``: uvicorn's line per request, on by default as the article runs it; the floors
    (bench/floors.py) run without it, since no server needs it to answer.
    """
    port = free_port()
    argv = [str(BIN / "uvicorn"), app, "--workers", str(workers)]
    if not access_log:
        argv.append("--no-access-log")
    return Server(
        subject=subject,
        argv=[*argv, "--host", HOST, "--port", str(port)],
        env={**_base_env(), **(extra_env or {})},
        port=port,
        ready_path="/docs",
        log_path=log_dir / f"{subject}-{port}.log",
        root_role="uvicorn" if workers == 1 else "supervisor",
        cpus=cpus,
    )


def floor_servers(log_dir: Path, workers: int, cpus: tuple[int, ...] | None) -> dict[str, Server]:
    """The two floors of bench/floors.py under uvicorn, without its access log (the least work)."""
    return {
        name: seed_server(log_dir, workers, app=app, subject=name, cpus=cpus, access_log=False)
        for name, app in ((FLOOR, "bench.floors:http_floor"), (LEAN, "bench.floors:lean"))
    }


@contextmanager
def running(*servers: Server) -> Iterator[None]:
    """Start the servers one after the other (so they do not compete while starting); always stop
    them all, whatever happens in between."""
    try:
        for server in servers:
            server.start()
            server.wait_ready()
        yield
    except Exception:
        # The logs live in a temporary directory that is about to go: show why a server failed.
        for server in servers:
            log(f"last lines of {server.subject}'s log:\n{server.log_tail()}")
        raise
    finally:
        for server in servers:
            server.stop()
