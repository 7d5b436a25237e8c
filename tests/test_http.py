"""The HTTP contract, against a real `bentoml serve` over real sockets."""

from __future__ import annotations

import io
import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.hostile import exchange
from tests.conftest import FIXTURES, Server

DIGITS = sorted((FIXTURES / "digits").glob("*.png"))
VARIANTS = sorted((FIXTURES / "variants").iterdir())
ONE_THREE = next(path for path in DIGITS if "digit3" in path.name)


def expected_label(path: Path) -> str:
    return "3" if "digit3" in path.name else "no 3"


def post_file(client: httpx.Client, content: bytes, name: str = "digit.png") -> httpx.Response:
    return client.post("/predict", files={"file": (name, content, "application/octet-stream")})


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


def tiny_png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header and a few compressed rows: kilobytes on disk, gigapixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    rows = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


# -- the seed's contract -------------------------------------------------------------------------


def test_seed_contract_multipart_file_field(client: httpx.Client) -> None:
    response = post_file(client, ONE_THREE.read_bytes(), ONE_THREE.name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"proba", "label"}
    assert isinstance(body["proba"], float)
    assert 0.5 < body["proba"] <= 1.0
    assert body["label"] == "3"


@pytest.mark.parametrize("path", DIGITS, ids=lambda p: p.name)
def test_held_out_digits(client: httpx.Client, path: Path) -> None:
    response = post_file(client, path.read_bytes(), path.name)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == expected_label(path)


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_real_world_variants(client: httpx.Client, path: Path) -> None:
    response = post_file(client, path.read_bytes(), path.name)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == expected_label(path)


def test_raw_body_gives_the_multipart_answer(client: httpx.Client) -> None:
    content = ONE_THREE.read_bytes()
    raw = client.post("/predict", content=content, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    assert raw.json() == post_file(client, content).json()


def test_answers_are_deterministic(client: httpx.Client) -> None:
    answers = {json.dumps(post_file(client, ONE_THREE.read_bytes()).json()) for _ in range(5)}
    assert len(answers) == 1


# -- bad input: a 4xx JSON object that says what was wrong and what is expected ------------------


def test_not_an_image(client: httpx.Client) -> None:
    assert_error(post_file(client, b"hello, I am a text file\n", "notes.txt"), 400, "image")


def test_empty_file(client: httpx.Client) -> None:
    assert_error(post_file(client, b"", "empty.png"), 400, "image")


def test_truncated_png(client: httpx.Client) -> None:
    content = (
        (FIXTURES / "variants")
        .joinpath(next(p.name for p in VARIANTS if p.suffix == ".png"))
        .read_bytes()
    )
    assert_error(post_file(client, content[: len(content) // 2]), 400)


def test_wrong_field_name(client: httpx.Client) -> None:
    response = client.post("/predict", files={"image": ("d.png", ONE_THREE.read_bytes())})
    assert_error(response, 400, "'file'", "'image'")


def test_no_fields(client: httpx.Client) -> None:
    response = client.post(
        "/predict",
        content=b"--xyz--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert_error(response, 400, "'file'")


def test_text_field_instead_of_file(client: httpx.Client) -> None:
    response = client.post("/predict", data={"file": "digit.png"})
    assert response.status_code in (400, 415)
    assert_error(response, response.status_code, "file")


def test_text_field_in_multipart(client: httpx.Client) -> None:
    response = client.post("/predict", data={"file": "digit.png"}, files={"other": ("x.bin", b"x")})
    assert_error(response, 400, "-F file=@digit.png")


def test_url_in_file_field_is_not_fetched(client: httpx.Client) -> None:
    # Stock BentoML downloads a URL given as a file field's value (a server-side request).
    response = client.post(
        "/predict", data={"file": "http://127.0.0.1:9/x.png"}, files={"other": ("x", b"x")}
    )
    assert_error(response, 400)


def test_json_body_is_unsupported_media_type(client: httpx.Client) -> None:
    response = client.post("/predict", json={"file": "digit.png"})
    assert_error(response, 415, "multipart/form-data", "'file'")


def test_malformed_multipart(client: httpx.Client) -> None:
    response = client.post(
        "/predict", content=b"garbage", headers={"Content-Type": "multipart/form-data"}
    )
    assert_error(response, 400, "multipart")


def test_body_over_the_cap(client: httpx.Client) -> None:
    response = post_file(client, b"\0" * (10 * 1024 * 1024 + 1))
    assert_error(response, 413, "limit")


def test_chunked_body_over_the_cap(client: httpx.Client) -> None:
    def chunks():
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    response = client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert_error(response, 413, "limit")


def raw_exchange(port: int, request: bytes) -> tuple[int, dict]:
    """Send bytes on a fresh socket and read one HTTP response: (status, JSON body)."""
    answer = exchange(f"http://127.0.0.1:{port}", request, timeout=30)
    assert answer.status is not None, f"no answer: {answer.body!r}"
    return answer.status, json.loads(answer.body)


def test_oversized_upload_is_refused_before_it_is_read(server: Server) -> None:
    """Declared 1 GB, 10 bytes sent: the answer comes at once, not after a gigabyte."""
    status, body = raw_exchange(
        server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 1000000000\r\n\r\n0123456789",
    )
    assert status == 413
    assert "limit" in body["error"]


def test_decompression_bomb(client: httpx.Client) -> None:
    bomb = tiny_png_declaring(30_000, 30_000)
    assert len(bomb) < 10_000
    assert_error(post_file(client, bomb, "bomb.png"), 413, "pixels")


@pytest.mark.parametrize("colour", [0, 255])
def test_blank_image_has_no_ink(client: httpx.Client, colour: int) -> None:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), colour).save(buffer, "PNG")
    assert_error(post_file(client, buffer.getvalue()), 422, "ink")


def test_get_is_method_not_allowed(client: httpx.Client) -> None:
    assert_error(client.get("/predict"), 405, "POST", "'file'")


def test_unknown_path_is_json_404(client: httpx.Client) -> None:
    assert_error(client.post("/nope"), 404, "/predict")


def test_server_still_answers_after_bad_input(client: httpx.Client) -> None:
    for content in (b"", b"junk", tiny_png_declaring(30_000, 30_000)):
        post_file(client, content)
    response = post_file(client, ONE_THREE.read_bytes())
    assert response.status_code == 200
    assert response.json()["label"] == "3"


def test_client_errors_are_not_logged_as_server_errors(
    server: Server, client: httpx.Client
) -> None:
    post_file(client, b"not an image at all", "notes.txt")
    time.sleep(0.5)
    log = server.log()
    assert "Traceback" not in log
    assert "client error 400" in log


# -- the rest of the surface ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_health(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_metrics(client: httpx.Client) -> None:
    def predictions_counted(status: str) -> float:
        scrape = client.get("/metrics")
        assert scrape.status_code == 200
        pattern = rf'^dlops_requests_total{{path="/predict",status="{status}"}} (\S+)$'
        match = re.search(pattern, scrape.text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    ok_before, bad_before = predictions_counted("200"), predictions_counted("400")
    post_file(client, ONE_THREE.read_bytes())
    post_file(client, ONE_THREE.read_bytes())
    post_file(client, b"junk")
    assert predictions_counted("200") == ok_before + 2
    assert predictions_counted("400") == bad_before + 1
    text = client.get("/metrics").text
    assert 'dlops_request_duration_seconds_bucket{le="0.0005",path="/predict"}' in text
    assert "bentoml_service_request_total" in text  # BentoML's own metrics are still there


def test_swagger_ui_and_schema(client: httpx.Client) -> None:
    assert "html" in client.get("/").headers["content-type"]
    schema = client.get("/docs.json").json()
    assert "[Try it in the browser](ui/)" in schema["info"]["description"]  # the page is linked
    request_body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in request_body
    properties = request_body["multipart/form-data"]["schema"]
    assert "file" in json.dumps(properties)


def test_bentoml_python_client(server: Server) -> None:
    import bentoml
    from bentoml.exceptions import BentoMLException

    with bentoml.SyncHTTPClient(server.url) as client:
        assert client.predict(file=ONE_THREE)["label"] == "3"
        assert client.predict(file=Image.open(ONE_THREE)) == client.predict(file=ONE_THREE)
        with pytest.raises(BentoMLException, match="not an image"):
            client.predict(file=Path(__file__))


# -- /predict_batch ------------------------------------------------------------------------------


def post_batch(client: httpx.Client, contents: list[bytes]) -> httpx.Response:
    files = [("file", (f"image{index}.png", content)) for index, content in enumerate(contents)]
    return client.post("/predict_batch", files=files)


def test_batch_answers_in_order_like_single_requests(client: httpx.Client) -> None:
    paths = DIGITS + VARIANTS[:8]
    response = post_batch(client, [path.read_bytes() for path in paths])
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [answer["label"] for answer in answers] == [expected_label(path) for path in paths]
    for path, answer in zip(paths[:3], answers, strict=False):
        single = post_file(client, path.read_bytes()).json()
        assert answer["label"] == single["label"]
        assert answer["proba"] == pytest.approx(single["proba"], abs=1e-6)


def test_batch_reports_errors_per_image(client: httpx.Client) -> None:
    blank = io.BytesIO()
    Image.new("L", (32, 32), 0).save(blank, "PNG")
    response = post_batch(client, [ONE_THREE.read_bytes(), b"junk", blank.getvalue()])
    assert response.status_code == 200, response.text
    good, not_image, no_ink = response.json()
    assert good["label"] == "3"
    assert not_image["status"] == 400 and "not an image" in not_image["error"]
    assert no_ink["status"] == 422 and "blank" in no_ink["error"]


def test_batch_over_the_limit(client: httpx.Client) -> None:
    response = post_batch(client, [ONE_THREE.read_bytes()] * 65)
    assert_error(response, 413, "64")


def test_batch_needs_multipart(client: httpx.Client) -> None:
    response = client.post(
        "/predict_batch", content=ONE_THREE.read_bytes(), headers={"Content-Type": "image/png"}
    )
    assert_error(response, 415, "-F file=@one.png -F file=@two.png")


def test_two_files_on_predict_point_to_the_batch_route(client: httpx.Client) -> None:
    response = post_batch(client, [ONE_THREE.read_bytes()] * 2)  # to /predict_batch: fine
    assert response.status_code == 200
    files = [("file", ("a.png", ONE_THREE.read_bytes()))] * 2
    assert_error(client.post("/predict", files=files), 400, "/predict_batch")


def test_bentoml_python_client_batch(server: Server) -> None:
    import bentoml

    with bentoml.SyncHTTPClient(server.url) as client:
        answers = client.predict_batch(file=DIGITS[:4])
    assert [answer["label"] for answer in answers] == [expected_label(p) for p in DIGITS[:4]]


# -- a server with a short request timeout -------------------------------------------------------


@pytest.fixture(scope="module")
def impatient_server(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = Server(
        model_home,
        tmp_path_factory.mktemp("impatient") / "serve.log",
        DLOPS_REQUEST_TIMEOUT_SECONDS="2",
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_trickled_upload_times_out_with_408(impatient_server: Server) -> None:
    """A client that sends only part of its body is answered in time, and nothing is stuck."""
    content = ONE_THREE.read_bytes()
    started = time.monotonic()
    status, body = raw_exchange(
        impatient_server.port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {len(content)}\r\n\r\n".encode()
        + content[:10],
    )
    assert status == 408
    assert "did not arrive within 2 s" in body["error"]
    assert time.monotonic() - started < 10
    answer = httpx.post(f"{impatient_server.url}/predict", files={"file": ("d.png", content)})
    assert answer.json()["label"] == "3"


def test_open_inference_routes_answer_a_trickled_body_with_408_too(
    impatient_server: Server,
) -> None:
    """dlops/http/deadline.py bounds every route alike: the client's stall is a 408, never a 504."""
    started = time.monotonic()
    status, body = raw_exchange(
        impatient_server.port,
        b"POST /v2/models/binary_classifier_3/infer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    assert status == 408
    assert list(body) == ["error"] and "did not arrive within 2 s" in body["error"]
    assert time.monotonic() - started < 10
    assert "POST /v2/models/binary_classifier_3/infer: 408 after 2 s" in impatient_server.log()


def test_large_uploads_arriving_together_are_all_answered(model_home: Path, tmp_path: Path) -> None:
    """Sixteen 0.9 MB batches at once against a 2 MiB body allowance: each is read in part before
    the allowance runs out, so each holds some of it and waits for the rest. None may wait until
    the deadline (dlops/http/deadline.py BodyAllowance)."""
    noise = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    filler = buffer.getvalue()
    files = [("file", ("three.png", ONE_THREE.read_bytes())), *[("file", ("n.png", filler))] * 3]
    running = Server(
        model_home,
        tmp_path / "serve.log",
        DLOPS_MAX_BODY_BYTES=str(1024 * 1024),
        DLOPS_REQUEST_TIMEOUT_SECONDS="5",
    )
    try:
        running.wait_ready()
        with ThreadPoolExecutor(16) as clients:
            answers = list(
                clients.map(
                    lambda _: httpx.post(f"{running.url}/predict_batch", files=files, timeout=30),
                    range(16),
                )
            )
        assert [answer.status_code for answer in answers] == [200] * 16, running.log()
        assert all(answer.json()[0]["label"] == "3" for answer in answers)
        assert "408" not in running.log()
    finally:
        running.stop()


def test_metrics_add_up_across_workers(model_home: Path, tmp_path: Path) -> None:
    """With two workers, every scrape (whichever worker answers it) counts every request."""
    running = Server(model_home, tmp_path / "serve.log", DLOPS_WORKERS="2")
    try:
        running.wait_ready()
        for _ in range(20):  # a fresh connection each time, so both workers take some
            with httpx.Client(base_url=running.url) as fresh:
                assert post_file(fresh, ONE_THREE.read_bytes()).status_code == 200
        for _ in range(6):
            with httpx.Client(base_url=running.url) as fresh:
                text = fresh.get("/metrics").text
            assert 'dlops_requests_total{path="/predict",status="200"} 20.0' in text
        # Per-image figures are written out by each worker every second (dlops/metrics.py).
        deadline = time.monotonic() + 10
        while 'dlops_predictions_total{label="3",model="binary_classifier_3"} 20.0' not in text:
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
            with httpx.Client(base_url=running.url) as fresh:
                text = fresh.get("/metrics").text
    finally:
        running.stop()
