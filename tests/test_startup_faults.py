"""A missing or damaged model stops `bentoml serve` with one clear line; importing repairs it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import BENTOML, MODEL, ROOT, Server, bentoml_env, free_port, run_import

EXIT_WITHIN_SECONDS = 60


def serve_until_exit(home: Path) -> subprocess.CompletedProcess[str]:
    """`bentoml serve` as users run it; a healthy server would outlive the timeout (and fail)."""
    return subprocess.run(
        [str(BENTOML), "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env=bentoml_env(home),
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_SECONDS,
    )


def assert_one_line_exit(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], output


def stored_model_file(home: Path) -> Path:
    (path,) = (home / "models" / "binary_classifier_3").glob("*/model.onnx")
    return path


def test_missing_model_exits_with_what_to_run(tmp_path: Path) -> None:
    result = serve_until_exit(tmp_path / "empty_home")
    assert_one_line_exit(
        result, "binary_classifier_3:latest is not in the BentoML model store", "import_model.py"
    )


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:1000]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"\0" * path.stat().st_size), id="zeroed"),
        pytest.param(lambda path: path.unlink(), id="deleted"),
    ],
)
def test_damaged_model_exits_with_what_to_run(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    home = tmp_path / "home"
    assert run_import(home, str(MODEL)).returncode == 0
    damage(stored_model_file(home))
    result = serve_until_exit(home)
    assert_one_line_exit(result, "cannot be served", "import_model.py")


def test_importing_again_repairs_a_damaged_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_import(home, str(MODEL)).returncode == 0
    damaged = stored_model_file(home)
    damaged.write_bytes(b"not a model")
    repaired = run_import(home, str(MODEL))
    assert repaired.returncode == 0, repaired.stderr
    last_line = repaired.stdout.strip().splitlines()[-1]
    assert last_line.startswith("imported:"), repaired.stdout  # a new version, not a no-op
    server = Server(home, tmp_path / "serve.log")
    try:
        server.wait_ready()
        digit = next((ROOT / "tests" / "fixtures" / "digits").glob("*_digit3.png"))
        answer = httpx.post(f"{server.url}/predict", files={"file": ("3.png", digit.read_bytes())})
        assert answer.json()["label"] == "3"
    finally:
        server.stop()


def test_make_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            ["make", "-s", "serve", f"PORT={port}"],
            cwd=ROOT,
            env=bentoml_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=EXIT_WITHIN_SECONDS,
        )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert f"make serve: port {port} is in use" in result.stderr.splitlines()[0], result.stderr
    assert f"PORT={port + 1} make serve" in result.stderr
