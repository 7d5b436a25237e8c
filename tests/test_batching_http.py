"""Adaptive batching over real HTTP: under load, small images (files, or /v2 input tensors of one
example) that arrive together share model calls, and every answer is still the one the image gets
alone."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import CONTENT_TYPE, LoadResult, multipart_body, run_hey
from dlops import config
from dlops.pipeline.preprocess.digit import to_model_input
from tests.conftest import FIXTURES, Server, serving
from tests.test_metrics import MODEL, scrape

DIGITS = sorted((FIXTURES / "digits").glob("*.png"))


Request = tuple[str, dict[str, Any]]  # a path, and httpx's keyword arguments for its POST


def digit_files() -> list[Request]:
    return [("/predict", {"files": {"file": (d.name, d.read_bytes())}}) for d in DIGITS]


def digit_tensors(client: httpx.Client) -> list[Request]:
    """Each digit as the input tensor itself, one example a request, as a Triton client sends."""
    path = f"/v2/models/{config.DEFAULT_MODEL_NAME}"
    tensor = client.get(path).json()["inputs"][0]
    side = tensor["shape"][-1]
    requests = []
    for digit in DIGITS:
        pixels = to_model_input(digit.read_bytes(), size=side)
        data = {"name": tensor["name"], "datatype": tensor["datatype"]}
        data |= {"shape": [1, *pixels.shape], "data": pixels.ravel().tolist()}
        requests.append((path + "/infer", {"json": {"inputs": [data]}}))
    return requests


async def all_at_once(url: str, requests: list[Request]) -> list[dict[str, Any]]:
    """Every request sent at once, over as many connections."""
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post(path, **arguments) for path, arguments in requests)
        )
    assert all(response.status_code == 200 for response in responses)
    return [response.json() for response in responses]


@pytest.fixture(scope="module")
def unbatched_server(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("unbatched") / "serve.log"
    yield from serving(Server(model_home, log, DLOPS_ADAPTIVE_BATCHING="0"))


@pytest.mark.parametrize(
    ("batching", "sent_as"),
    [(True, "files"), (False, "files"), (True, "tensors")],
    ids=["adaptive batching", "turned off", "v2 tensors"],
)
def test_under_load_images_share_model_calls_and_keep_their_own_answers(
    batching: bool, sent_as: str, request: pytest.FixtureRequest, hey: str, tmp_path: Path
) -> None:
    server: Server = request.getfixturevalue("server" if batching else "unbatched_server")
    body = tmp_path / "body.bin"
    loads: list[LoadResult] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        if sent_as == "files":
            digits, content_type = digit_files(), CONTENT_TYPE
            body.write_bytes(multipart_body(DIGITS[0].read_bytes()))
        else:  # the load sends tensors too: only theirs can share calls
            digits, content_type = digit_tensors(client), "application/json"
            body.write_text(json.dumps(digits[0][1]["json"]))
        # Enough clients that the worker always finds several requests ready at once.
        url = server.url + digits[0][0]
        load = threading.Thread(
            target=lambda: loads.append(run_hey(hey, url, body, 3000, 32, content_type))
        )
        alone = [client.post(path, **arguments).json() for path, arguments in digits]
        before = scrape(client)
        load.start()
        together = asyncio.run(all_at_once(server.url, digits * 4))
        load.join()
        after = scrape(client)

    assert together == alone * 4  # the same floats, bit for bit
    assert loads[0].ok == loads[0].sent > 0
    proba = ("dlops_prediction_proba_count", (MODEL,))
    infer = ("dlops_stage_duration_seconds_count", (MODEL, ("stage", "infer")))
    images, model_calls = after[proba] - before[proba], after[infer] - before[infer]
    assert images == loads[0].sent + 4 * len(DIGITS)
    if batching:
        assert model_calls < images  # some calls carried several images
    else:  # DLOPS_ADAPTIVE_BATCHING=0: each request its own call
        assert model_calls == images
