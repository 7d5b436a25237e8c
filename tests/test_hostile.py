"""Hostile input against a real `bentoml serve`: every attack gets a bounded, logged 4xx answer
(or a 200 within budget), /livez keeps answering meanwhile, and the serving tree's memory stays
within a 512 MiB dyno.

The server is the issue's: one worker, API_KEY set, a 3 s request timeout; short head timeout
and a small connection cap keep the connection cases quick. The payloads come from
bench/hostile_inputs.py, which `python -m bench.hostile` measures before and after.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import hostile_inputs as hostile
from bench.hostile import Answer, Watch, exchange, request_bytes
from tests.conftest import FIXTURES, Server, serving

API_KEY = "hostile-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
THREE = (FIXTURES / "digits" / "test0300_digit3.png").read_bytes()
V2_INFER = "/v2/models/binary_classifier_3/infer"
MAX_CONNECTIONS = 40
HEAD_TIMEOUT_SECONDS = 2
# The whole serving tree (arbiter and worker) fits a 512 MB dyno, under any input.
TREE_BUDGET_MIB = 512
# /livez must answer while an attack runs; a generous bound so a busy CI machine cannot flake.
LIVEZ_TIMEOUT_SECONDS = 5


@pytest.fixture(scope="module")
def hostile_server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(
        Server(
            model_home,
            tmp_path_factory.mktemp("hostile") / "serve.log",
            API_KEY=API_KEY,
            DLOPS_REQUEST_TIMEOUT_SECONDS="3",
            DLOPS_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT_SECONDS),
            DLOPS_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        )
    )


def attack(server: Server, send: Callable[[], Any]) -> tuple[Any, Watch]:
    """``send()`` while /livez is asked every 0.1 s: every ask must be answered 200."""
    with Watch(server.url, server.process.pid, LIVEZ_TIMEOUT_SECONDS) as watch:
        outcome = send()
    assert len(watch.livez) >= 3 and set(watch.livez) == {200}, watch.livez
    return outcome, watch


def post(server: Server, path: str, files: list[bytes], **padding: int) -> Answer:
    body, content_type = hostile.multipart(files, **padding)
    headers = {"Content-Type": content_type, **AUTH}
    return exchange(server.url, request_bytes("POST", path, headers, body))


def error_of(answer: Answer) -> str:
    payload = json.loads(answer.body)
    assert list(payload) == ["error"], payload
    return str(payload["error"])


# -- uploads -------------------------------------------------------------------------------------


def test_a_strip_of_one_pixel_by_forty_million_is_refused(hostile_server: Server) -> None:
    answer, _ = attack(
        hostile_server, lambda: post(hostile_server, "/predict", [hostile.strip_png()])
    )
    assert answer.status == 400
    assert "1x40000000" in error_of(answer) and "aspect ratio beyond 100:1" in error_of(answer)


def test_a_batch_of_forty_megapixel_pngs_is_bounded(hostile_server: Server) -> None:
    """48 40 MP 1-bit PNGs (243 kB): two are classified, the rest refused unread."""
    images = [hostile.bitonal_png(6000, 6666)] * 48
    answer, watch = attack(hostile_server, lambda: post(hostile_server, "/predict_batch", images))
    assert answer.status == 200
    statuses = [item.get("status", 200) for item in json.loads(answer.body)]
    assert statuses == [200, 200] + [413] * 46
    assert "100,000,000 pixels" in json.loads(answer.body)[2]["error"]
    assert watch.peak_tree_mib < TREE_BUDGET_MIB


def test_a_jpeg_of_a_thousand_scans_is_refused_unread(hostile_server: Server) -> None:
    jpeg = hostile.many_scans_jpeg()
    answer, _ = attack(hostile_server, lambda: post(hostile_server, "/predict", [jpeg]))
    assert answer.status == 400
    assert re.search(r"has 1,2\d\d scans; at most 100", error_of(answer))


def test_a_png_with_megabytes_of_text_chunks_is_refused(hostile_server: Server) -> None:
    answer, _ = attack(
        hostile_server, lambda: post(hostile_server, "/predict", [hostile.text_bomb_png()])
    )
    assert answer.status == 400 and "text" in error_of(answer)


def test_a_multipart_part_head_of_megabytes_is_refused(hostile_server: Server) -> None:
    answer, _ = attack(
        hostile_server,
        lambda: post(hostile_server, "/predict", [THREE], part_head_padding=9 * 2**20),
    )
    assert answer.status == 400
    assert "part's headers take 9,437," in error_of(answer)


# -- deadlines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/predict", "image/png"),
        ("/predict_batch", "multipart/form-data; boundary=x"),
        (V2_INFER, "application/json"),
    ],
)
def test_a_body_that_never_finishes_gets_408_on_every_route(
    hostile_server: Server, path: str, content_type: str
) -> None:
    headers = {"Content-Type": content_type, **AUTH}
    payload = request_bytes("POST", path, headers, b"{" * 999)
    answer = exchange(hostile_server.url, payload, stall_after=len(payload) - 990)
    assert answer.status == 408
    assert "did not arrive within 3 s" in error_of(answer)
    assert answer.headers["connection"] == "close"
    assert f"POST {path}: 408 after 3 s (body still arriving)" in hostile_server.log()


def test_work_past_the_deadline_is_503_and_stops(model_home: Path, tmp_path: Path) -> None:
    """64 x 40 MP PNGs take seconds (tens of ms each); with a 1 s deadline the answer comes at
    the deadline, and the abandoned work stops at its next image instead of decoding the rest."""
    server = Server(
        model_home,
        tmp_path / "serve.log",
        DLOPS_REQUEST_TIMEOUT_SECONDS="1",
        DLOPS_MAX_REQUEST_PIXELS=str(10**10),
    )
    with served(server):
        images = [hostile.bitonal_png(6000, 6666)] * 64
        answer, watch = attack(server, lambda: post(server, "/predict_batch", images))
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert "not answered within 1 s" in error_of(answer)
        assert "POST /predict_batch: 503 after 1 s (not answered)" in server.log()
        time.sleep(2)  # the image in hand finishes, then nothing more
        decoded = decoded_images(server)
        time.sleep(2)
        assert decoded_images(server) == decoded < 64
        assert watch.peak_tree_mib < TREE_BUDGET_MIB


@contextmanager
def served(server: Server) -> Iterator[Server]:
    yield from serving(server)


def decoded_images(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(
        r'^dlops_stage_duration_seconds_count\{model="[^"]*",stage="decode"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert found, text[:2000]
    return float(found.group(1))


# -- HTTP heads and connections ------------------------------------------------------------------


def test_a_header_of_megabytes_is_refused_with_431(hostile_server: Server) -> None:
    payload = request_bytes("GET", "/livez", {"X-Padding": "a" * 2**20})
    answer, _ = attack(
        hostile_server, lambda: exchange(hostile_server.url, payload, stall_after=64 * 1024)
    )
    assert answer.status == 431 and "32,768 bytes" in error_of(answer)


def test_five_hundred_headers_are_refused_with_431(hostile_server: Server) -> None:
    headers = {f"X-Header-{index}": "x" for index in range(500)}
    answer, _ = attack(
        hostile_server,
        lambda: exchange(hostile_server.url, request_bytes("GET", "/livez", headers)),
    )
    assert answer.status == 431 and "more than 100 headers" in error_of(answer)


def open_connections(server: Server, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(count)]


def closed_by_server(connection: socket.socket) -> bytes | None:
    """What the server sent before closing, or None if the connection is still open."""
    connection.settimeout(0.05)
    try:
        data = connection.recv(65536)
    except TimeoutError:
        return None
    except OSError:
        return b""
    return data


def test_idle_connections_cannot_lock_out_the_health_probe(hostile_server: Server) -> None:
    idle = open_connections(hostile_server, MAX_CONNECTIONS * 2)
    try:
        # Over the cap: each new connection closed the longest-waiting idle one.
        assert httpx.get(f"{hostile_server.url}/livez", timeout=5).status_code == 200
        assert sum(closed_by_server(c) is not None for c in idle) >= MAX_CONNECTIONS
        time.sleep(HEAD_TIMEOUT_SECONDS + 1)
        assert all(closed_by_server(c) == b"" for c in idle)  # closed, nothing to answer
    finally:
        for connection in idle:
            connection.close()


def test_when_every_connection_has_a_request_in_progress_the_next_gets_503(
    hostile_server: Server,
) -> None:
    head = request_bytes("POST", "/predict", {"Content-Type": "image/png", **AUTH}, THREE)
    busy: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            connection = socket.create_connection(("127.0.0.1", hostile_server.port), timeout=10)
            busy.append(connection)
            # A head and a little of the body at once: a request in progress, not waiting.
            connection.sendall(head[: len(head) - len(THREE) + 10])
        time.sleep(0.5)
        answer = exchange(hostile_server.url, request_bytes("GET", "/livez"))
        assert answer.status == 503, answer
        assert f"{MAX_CONNECTIONS} connections all have a request in progress" in error_of(answer)
    finally:
        for connection in busy:
            connection.close()
    # The server notices the closes on its own time; the next test needs the room back.
    deadline = time.monotonic() + 10
    while exchange(hostile_server.url, request_bytes("GET", "/livez")).status != 200:
        assert time.monotonic() < deadline, "the closed connections were never released"
        time.sleep(0.1)


def test_a_head_sent_a_byte_at_a_time_gets_408(hostile_server: Server) -> None:
    slow = open_connections(hostile_server, 10)
    head = request_bytes("GET", "/livez")
    received: dict[int, bytes] = {}
    try:
        for index in range(len(head)):
            for number, connection in enumerate(slow):
                with suppress(OSError):
                    connection.send(head[index : index + 1])
                if number not in received and (sent := closed_by_server(connection)) is not None:
                    received[number] = sent
            if len(received) == len(slow):
                break
            time.sleep(0.5)
        answers = [received.get(number, b"") for number in range(len(slow))]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers
        assert b'"error": "the request\'s headers did not arrive within 2 s' in answers[0]
    finally:
        for connection in slow:
            connection.close()


# -- logs and redirects --------------------------------------------------------------------------


def test_a_line_feed_in_the_path_cannot_forge_a_log_line(hostile_server: Server) -> None:
    answer = exchange(hostile_server.url, request_bytes("GET", "/predict%0AFORGED%20line"))
    assert answer.status == 401
    time.sleep(0.5)
    log = hostile_server.log()
    assert not any(line.startswith("FORGED") for line in log.splitlines())
    assert "GET /predict\\nFORGED line: client error 401" in log


def test_the_ui_redirect_ignores_the_host_header(hostile_server: Server) -> None:
    payload = request_bytes("GET", "/ui").replace(b"Host: 127.0.0.1", b"Host: evil.example")
    answer = exchange(hostile_server.url, payload)
    assert answer.status == 307 and answer.headers["location"] == "ui/"


# -- memory --------------------------------------------------------------------------------------


def test_the_worst_known_inputs_keep_the_tree_within_a_512_mib_dyno(
    hostile_server: Server,
) -> None:
    """The heaviest uploads this suite knows, one after another and two at once."""
    photo = hostile.bitonal_png(6000, 6666)
    worst: list[Callable[[], Answer]] = [
        lambda: exchange(
            hostile_server.url,
            request_bytes(
                "POST",
                V2_INFER,
                {"Content-Type": "application/json", **AUTH},
                hostile.v2_files_request([photo] * 3),
            ),
        ),
        lambda: post(hostile_server, "/predict_batch", [photo] * 48),
        lambda: post(hostile_server, "/predict", [hostile.many_scans_jpeg()]),
        lambda: post(hostile_server, "/predict", [hostile.text_bomb_png()]),
    ]

    def run_all() -> list[int | None]:
        statuses = [send().status for send in worst]
        pair: list[int | None] = []
        threads = [threading.Thread(target=lambda: pair.append(worst[1]().status)) for _ in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return statuses + pair

    statuses, watch = attack(hostile_server, run_all)
    assert all(status is not None and status < 500 for status in statuses), statuses
    assert watch.peak_tree_mib < TREE_BUDGET_MIB, watch.peak_tree_mib
