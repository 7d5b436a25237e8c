"""The prediction metrics on /metrics: what the model answered, stage times, errors by kind."""

from __future__ import annotations

import io
from collections import Counter

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from dlops import config
from tests.conftest import FIXTURES

THREE = FIXTURES / "digits" / "test0300_digit3.png"
ZERO = next((FIXTURES / "digits").glob("*_digit0.png"))
MODEL = ("model", config.DEFAULT_MODEL_NAME)  # every series is the model's


def scrape(client: httpx.Client) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every dlops sample on /metrics, keyed by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.startswith("dlops_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return samples


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predictions_stages_and_errors_are_counted(client: httpx.Client) -> None:
    before = scrape(client)
    three = client.post("/predict", files={"file": ("3.png", THREE.read_bytes())}).json()
    zero = client.post("/predict", files={"file": ("0.png", ZERO.read_bytes())}).json()
    batch = client.post(
        "/predict_batch",
        files=[
            ("file", ("3.png", THREE.read_bytes())),
            ("file", ("notes.txt", b"hello")),
            ("file", ("0.png", ZERO.read_bytes())),
        ],
    ).json()
    assert client.post("/predict", files={"file": ("x.txt", b"not an image")}).status_code == 400
    assert client.post("/predict", files={"file": ("blank.png", blank_png())}).status_code == 422
    assert client.post("/predict", json={"image": "x"}).status_code == 415
    after = scrape(client)
    delta = {key: after[key] - before.get(key, 0.0) for key in after}

    assert (three["label"], zero["label"]) == ("3", "no 3")
    assert [answer.get("label") for answer in batch] == ["3", None, "no 3"]
    assert delta[("dlops_predictions_total", (("label", "3"), MODEL))] == 2
    assert delta[("dlops_predictions_total", (("label", "no 3"), MODEL))] == 2
    # One observation per classified image; their sum is the sum of the answered probabilities.
    assert delta[("dlops_prediction_proba_count", (MODEL,))] == 4
    answered = three["proba"] + zero["proba"] + batch[0]["proba"] + batch[2]["proba"]
    assert delta[("dlops_prediction_proba_sum", (MODEL,))] == pytest.approx(answered)
    assert delta[("dlops_prediction_proba_bucket", (("le", "0.01"), MODEL))] == 2  # the zeros
    # decode and preprocess: once per image that became a digit; infer: once per model call.
    assert delta[("dlops_stage_duration_seconds_count", (MODEL, ("stage", "decode")))] == 4
    assert delta[("dlops_stage_duration_seconds_count", (MODEL, ("stage", "preprocess")))] == 4
    assert delta[("dlops_stage_duration_seconds_count", (MODEL, ("stage", "infer")))] == 3
    assert delta[("dlops_stage_duration_seconds_sum", (MODEL, ("stage", "infer")))] > 0
    assert delta[("dlops_errors_total", (("kind", "not_an_image"), MODEL))] == 2
    assert delta[("dlops_errors_total", (("kind", "no_ink"), MODEL))] == 1
    assert delta[("dlops_errors_total", (("kind", "unsupported_media_type"), MODEL))] == 1
