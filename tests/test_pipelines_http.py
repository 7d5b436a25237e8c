"""A model served with a pipeline written beside it (a letterbox on white) and three independent
labels, through a real `bentoml serve`: the served answers are the in-process pipeline's."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from dlops.model.spec import ModelSpec
from dlops.pipeline.preprocess import Preprocessor
from tests.conftest import TAGGER_LABELS as LABELS
from tests.conftest import Server


def photo(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, "PNG")
    return data.getvalue()


def in_process(model: Path, spec: ModelSpec, data: bytes) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    example = Preprocessor(spec)(Image.open(io.BytesIO(data)))
    (scores,) = session.run(None, {spec.input.name: example[None]})
    return np.asarray(scores, dtype=np.float64)[0]


@pytest.mark.parametrize(("width", "height"), [(640, 200), (120, 500), (320, 320)])
def test_served_answers_are_the_pipelines(
    tagger: tuple[Server, ModelSpec], letterbox_model: Path, width: int, height: int
) -> None:
    server, spec = tagger
    assert spec.postprocess.task == "multi"
    data = photo(width, height, seed=width)
    expected = in_process(letterbox_model, spec, data)
    answer = httpx.post(f"{server.url}/predict?top_k=0", files={"file": ("p.png", data)}).json()
    served = {entry["label"]: entry["proba"] for entry in answer["top_k"]}
    np.testing.assert_allclose([served[label] for label in LABELS], expected, atol=1e-6)
    found = [entry["label"] for entry in answer["labels"]]
    assert found == [
        label
        for label, p in sorted(zip(LABELS, expected, strict=True), key=lambda x: -x[1])
        if p >= 0.5
    ]
    assert answer["threshold"] == 0.5


def test_the_letterbox_is_what_the_model_sees(
    tagger: tuple[Server, ModelSpec], letterbox_model: Path
) -> None:
    """The same picture letterboxed and stretched gives other answers: the pad is served."""
    server, spec = tagger
    data = photo(900, 150, seed=1)
    served = httpx.post(f"{server.url}/predict?top_k=0", files={"file": ("p.png", data)}).json()
    stretched = np.asarray(
        Image.open(io.BytesIO(data)).convert("RGB").resize((320, 320), Image.Resampling.BILINEAR)
    )
    letterboxed = Preprocessor(spec).pixels(Image.open(io.BytesIO(data)))
    assert (letterboxed[:100] == 255).all() and not (stretched[:100] == 255).all()
    assert served["top_k"][0]["proba"] == pytest.approx(
        in_process(letterbox_model, spec, data).max(), abs=1e-6
    )


def test_v2_labels_output_joins_the_labels_found(tagger: tuple[Server, ModelSpec]) -> None:
    server, _ = tagger
    data = photo(400, 300, seed=2)
    single = httpx.post(f"{server.url}/predict", files={"file": ("p.png", data)}).json()
    image_file = {
        "name": "image_file",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"content_type": "base64"},
        "data": [base64.b64encode(data).decode()],
    }
    request = {"inputs": [image_file]}
    response = httpx.post(f"{server.url}/v2/models/tagger/infer", json=request)
    if response.status_code != 200:
        pytest.fail(response.text)
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert outputs["label"]["data"] == [", ".join(entry["label"] for entry in single["labels"])]


def test_the_api_page_shows_a_multi_label_answer(tagger: tuple[Server, ModelSpec]) -> None:
    server, _ = tagger
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200, response.text[:500]
    schema = response.json()
    assert "paths" in schema, str(schema)[:500]
    predict = json.dumps(schema["paths"]["/predict"]["post"]["responses"]["200"])
    assert '"labels": [' in predict and '"threshold": 0.5' in predict
