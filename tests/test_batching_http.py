"""Adaptive batching over real HTTP: under load, small images that arrive together share model
calls, and every answer is still the one the image gets alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import LoadResult, multipart_body, run_hey
from tests.conftest import FIXTURES, Server, serving
from tests.test_metrics import MODEL, scrape

DIGITS = sorted((FIXTURES / "digits").glob("*.png"))


async def all_at_once(url: str, rounds: int) -> list[dict[str, Any]]:
    """Every digit, ``rounds`` times, all sent at once over as many connections."""
    limits = httpx.Limits(max_connections=len(DIGITS) * rounds)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post("/predict", files={"file": (digit.name, digit.read_bytes())})
                for _ in range(rounds)
                for digit in DIGITS
            )
        )
    assert all(response.status_code == 200 for response in responses)
    return [response.json() for response in responses]


@pytest.fixture(scope="module")
def unbatched_server(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("unbatched") / "serve.log"
    yield from serving(Server(model_home, log, DLOPS_ADAPTIVE_BATCHING="0"))


@pytest.mark.parametrize("batching", [True, False], ids=["adaptive batching", "turned off"])
def test_under_load_images_share_model_calls_and_keep_their_own_answers(
    batching: bool, request: pytest.FixtureRequest, hey: str, tmp_path: Path
) -> None:
    server: Server = request.getfixturevalue("server" if batching else "unbatched_server")
    body = tmp_path / "body.bin"
    body.write_bytes(multipart_body(DIGITS[0].read_bytes()))
    loads: list[LoadResult] = []
    # Enough clients that the worker always finds several requests ready at once.
    load = threading.Thread(
        target=lambda: loads.append(run_hey(hey, server.url + "/predict", body, 3000, 32))
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        alone = [
            client.post("/predict", files={"file": (digit.name, digit.read_bytes())}).json()
            for digit in DIGITS
        ]
        before = scrape(client)
        load.start()
        together = asyncio.run(all_at_once(server.url, rounds=4))
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
