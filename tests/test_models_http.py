"""The other models over real HTTP: the 10-class digits, the real orientation model, a slow one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import FIXTURES, Server, run_import
from tests.documents import EXPECTED_LABEL, ROTATIONS, document
from tests.orientation_reference import reference_labels, reference_probabilities
from tests.test_startup import SLOW_MODEL_ENV, save_slow_model

DIGITS = sorted((FIXTURES / "digits").glob("*.png"))


def digit_of(path: Path) -> str:
    return path.stem.split("digit")[1][0]


def post(server: Server, content: bytes, query: str = "") -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict{query}",
        files={"file": ("image", content, "application/octet-stream")},
        timeout=60,
    )


# -- the 10-class digit model -----------------------------------------------------------------


def test_digits10_answers_the_digit_with_a_ranking(digits10_server: Server) -> None:
    right = 0
    for path in DIGITS:
        response = post(digits10_server, path.read_bytes())
        assert response.status_code == 200, response.text
        answer = response.json()
        assert list(answer) == ["label", "proba", "top_k"]
        ranking = answer["top_k"]
        assert len(ranking) == 5
        assert ranking[0] == {
            "label": answer["label"],
            "index": int(answer["label"]),
            "proba": answer["proba"],
        }
        assert [entry["proba"] for entry in ranking] == sorted(
            (entry["proba"] for entry in ranking), reverse=True
        )
        right += answer["label"] == digit_of(path)
    assert right >= len(DIGITS) - 2, f"{right} of {len(DIGITS)} digits right"


@pytest.mark.parametrize(("query", "count"), [("?top_k=0", 10), ("?top_k=3", 3), ("?top_k=50", 10)])
def test_digits10_top_k_per_request(digits10_server: Server, query: str, count: int) -> None:
    answer = post(digits10_server, DIGITS[0].read_bytes(), query).json()
    assert len(answer["top_k"]) == count
    if count == 10:
        assert sum(entry["proba"] for entry in answer["top_k"]) == pytest.approx(1.0)


@pytest.mark.parametrize("value", ["-1", "three", "1.5", "9999999"])
def test_digits10_bad_top_k(digits10_server: Server, value: str) -> None:
    response = post(digits10_server, DIGITS[0].read_bytes(), f"?top_k={value}")
    assert response.status_code == 400
    assert "top_k" in response.json()["error"] and "whole number" in response.json()["error"]


def test_digits10_batch_keeps_per_item_errors(digits10_server: Server) -> None:
    files = [
        ("file", ("a.png", DIGITS[0].read_bytes(), "image/png")),
        ("file", ("b.txt", b"not an image", "image/png")),
        ("file", ("c.png", DIGITS[5].read_bytes(), "image/png")),
    ]
    response = httpx.post(f"{digits10_server.url}/predict_batch?top_k=2", files=files, timeout=60)
    assert response.status_code == 200, response.text
    first, bad, last = response.json()
    assert len(first["top_k"]) == 2 and len(last["top_k"]) == 2
    assert bad["status"] == 400 and "not an image" in bad["error"]
    single = post(digits10_server, DIGITS[5].read_bytes(), "?top_k=2").json()
    assert last == single


# -- the real document-orientation model ------------------------------------------------------


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_orientation_agrees_with_the_packages_pipeline(
    orientation_server: Server, rotation: int, seed: int
) -> None:
    content = document(seed, rotation, "JPEG")
    response = post(orientation_server, content, "?top_k=0")
    assert response.status_code == 200, response.text
    answer = response.json()
    reference = reference_probabilities(content)
    labels = reference_labels()
    assert answer["label"] == labels[int(np.argmax(reference))]
    served = np.zeros(len(labels))
    for entry in answer["top_k"]:
        served[entry["index"]] = entry["proba"]
    assert np.max(np.abs(served - reference)) < 0.1, (served, reference)
    assert answer["label"] == EXPECTED_LABEL[rotation]


def test_orientation_batch_equals_single_answers(orientation_server: Server) -> None:
    contents = [document(7, rotation, "PNG") for rotation in ROTATIONS]
    files = [
        ("file", (f"{index}.png", content, "image/png")) for index, content in enumerate(contents)
    ]
    batch = httpx.post(f"{orientation_server.url}/predict_batch", files=files, timeout=60).json()
    singles = [post(orientation_server, content).json() for content in contents]
    assert [answer["label"] for answer in batch] == [answer["label"] for answer in singles]
    for batched, single in zip(batch, singles, strict=True):
        assert batched["proba"] == pytest.approx(single["proba"], abs=1e-5)


def test_orientation_refuses_a_non_image(orientation_server: Server) -> None:
    response = post(orientation_server, b"%PDF-1.7 not an image")
    assert response.status_code == 400
    assert "expected a PNG, JPEG" in response.json()["error"]


# -- the event loop stays free while a slow model loads ---------------------------------------


def test_livez_answers_while_an_early_predict_waits_for_a_slow_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    model = tmp_path / "slow.onnx"
    save_slow_model(model)  # a digit-sized input, but seconds a call: it must not run inline
    imported = run_import(home, str(model), "--name", "slow")
    assert imported.returncode == 0, imported.stderr
    server = Server(home, tmp_path / "serve.log", **SLOW_MODEL_ENV)
    try:
        deadline = time.monotonic() + 90
        while True:  # up, but still warming the model up
            assert time.monotonic() < deadline, server.log()
            try:
                if httpx.get(f"{server.url}/livez", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.get(f"{server.url}/readyz", timeout=1).status_code == 503
        answers: list[httpx.Response] = []
        early = threading.Thread(
            target=lambda: answers.append(
                post(server, (FIXTURES / "digits" / "test0000_digit0.png").read_bytes())
            )
        )
        early.start()
        probes = 0
        while early.is_alive():
            # A liveness probe with Kubernetes' default 1 s timeout must never fail meanwhile.
            response = httpx.get(f"{server.url}/livez", timeout=1)
            assert response.status_code == 200
            probes += 1
            time.sleep(0.1)
        early.join()
        assert probes >= 5, "the early request did not wait for the model"
        assert answers[0].status_code == 200, answers[0].text
        assert set(answers[0].json()) == {"proba", "label"}
    finally:
        server.stop()
