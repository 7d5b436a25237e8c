"""Fuzzing the running server: no request, however broken, gets a 5xx or leaves a traceback.

Two sources of requests, both against the session's real `bentoml serve`:

- schemathesis, from the service's own OpenAPI schema (/docs.json): every operation (the
  prediction routes, /v2, /ui, health), with data that fits the schema and data that violates it;
- hypothesis, with httpx: what the schema cannot describe — broken multipart framing, wrong or
  missing boundaries, odd part headers, every Content-Type, chunked bodies, random bytes — to
  /predict and /predict_batch.

Every answer must be below 500; every error is a JSON object with exactly one key, ``error``;
every success has the documented shape. Afterwards the server log must hold no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import example, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import Server
from tests.test_fuzz_imaging import (
    SIGNATURES,
    encoded_images,
    float_tiff_spanning_float32,
    fuzz_settings,
)

PREDICTION_KEYS = {"proba", "label"}


def error_message_of(status: int, content: bytes) -> str:
    """The ``error`` of an error body, after checking it is ``{"error": "<text>"}`` and no more."""
    body = json.loads(content)
    assert isinstance(body, dict) and list(body) == ["error"], f"{status} answered {body!r}"
    assert isinstance(body["error"], str) and body["error"].strip(), f"{status}: {body!r}"
    return body["error"]


def assert_prediction(answer: Any) -> None:
    assert isinstance(answer, dict) and set(answer) == PREDICTION_KEYS, answer
    assert isinstance(answer["proba"], float) and 0.0 <= answer["proba"] <= 1.0, answer
    assert isinstance(answer["label"], str), answer


def assert_documented_answer(path: str, response: httpx.Response) -> None:
    """Below 500, and either the documented success or ``{"error": ...}``."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:2000]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response
    if response.status_code >= 400:
        error_message_of(response.status_code, response.content)
        return
    assert response.status_code == 200, response
    answer = response.json()
    if path == "/predict":
        assert_prediction(answer)
        return
    assert isinstance(answer, list) and answer, answer
    for item in answer:
        if "error" in item:
            assert set(item) == {"error", "status"}, item
            assert 400 <= item["status"] < 500 and item["error"].strip(), item
        else:
            assert_prediction(item)


@pytest.fixture
def clean_server_log(server: Server) -> Iterator[None]:
    """Fails the test if the server logged a traceback while it ran."""
    start = len(server.log())
    yield
    written = server.log()[start:]
    assert "Traceback" not in written, written[-6000:]


# --- schemathesis, from the OpenAPI schema -------------------------------------------------------


def error_is_one_json_key(ctx: Any, response: schemathesis.Response, case: Any) -> None:
    """A custom schemathesis check: every error response is ``{"error": "..."}``."""
    if response.status_code >= 400:
        error_message_of(response.status_code, response.content)


@pytest.mark.usefixtures("clean_server_log")
def test_openapi_operations_never_fail_on_the_server(server: Server) -> None:
    # schemathesis' own pytest loader (from_fixture) fails under pytest 9.2 (it sets
    # Function._nodeid, which is gone), so its cases are drawn as a plain hypothesis strategy.
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    cases = st.one_of([schema.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @fuzz_settings(120)
    @given(case=cases)
    def every_case(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.url, timeout=30)
        case.validate_response(response, checks=[not_a_server_error, error_is_one_json_key])

    every_case()


# --- hypothesis and httpx: what the schema cannot describe ---------------------------------------

CRLF = b"\r\n"
# Control characters are not allowed in a header value (RFC 9110): uvicorn's parser answers such
# a request itself, before any application code, with a plain-text 400, so they are left out.
CONTROL_CHARACTERS = bytes([*range(0x20), 0x7F]).replace(b"\t", b"")


def header_value(raw: bytes) -> bytes:
    """``raw`` as a valid header value: no control characters, no surrounding white space."""
    return raw.translate(None, CONTROL_CHARACTERS).strip(b" \t")


header_bytes = st.binary(max_size=40).map(header_value)
# RFC 2046 boundary characters; real clients use a few dozen of them, letters and digits mostly.
BOUNDARY_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=?"
boundaries = st.one_of(
    st.sampled_from([b"boundary", b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"x", b"a" * 70]),
    st.text(BOUNDARY_CHARACTERS, min_size=1, max_size=70).map(str.encode),
    st.binary(min_size=1, max_size=80).map(header_value).filter(bool),
)
part_contents = st.one_of(
    encoded_images(max_pixels=1024),
    st.binary(max_size=600),
    st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=300)).map(b"".join),
    st.just(b""),
)
GOOD_DISPOSITION = b'form-data; name="file"; filename="digit.png"'
odd_dispositions = st.one_of(
    st.sampled_from(
        [
            b'form-data; name="file"; filename=""',
            b"form-data; name=file; filename=digit.png",
            b'form-data; name="file"',
            b'form-data; name="image"; filename="digit.png"',
            b'form-data; filename="digit.png"',
            b"form-data; name=\"file\"; filename*=UTF-8''d%C3%ADgito.png",
            b'form-data; name=""; filename="a"',
            b'form-data; name="file"; name="other"; filename="a"',
            b"form-data",
            b"attachment",
            b"",
        ]
    ),
    st.tuples(st.just(b"form-data; name="), header_bytes).map(b"".join),
    header_bytes,
)


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in ten: each defect is rare, so most requests get past the others.

    A middle value: hypothesis draws the bounds of a range far more often than the rest, and
    shrinks towards the lower one, so a failure shrinks towards the fewest defects.
    """
    return draw(st.integers(0, 9)) == 5


@st.composite
def part_heads(draw: st.DrawFn) -> bytes:
    """A part's header lines: mostly a proper file field, now and then something else."""
    lines = []
    if not rarely(draw):
        name = b"content-disposition" if rarely(draw) else b"Content-Disposition"
        lines.append(name + b": " + (draw(odd_dispositions) if rarely(draw) else GOOD_DISPOSITION))
    if draw(st.booleans()):
        lines.append(b"Content-Type: " + draw(st.sampled_from([b"image/png", b"text/plain", b""])))
    if rarely(draw):
        lines.extend(draw(st.lists(header_bytes, min_size=1, max_size=2)))
    return CRLF.join(lines)


@st.composite
def multipart_bodies(draw: st.DrawFn, boundary: bytes) -> bytes:
    """Parts between boundary lines, with each framing rule of RFC 7578 broken now and then."""
    newline = b"\n" if rarely(draw) else CRLF
    delimiter = b"--" + (draw(boundaries) if rarely(draw) else boundary)
    body = b"preamble" + newline if rarely(draw) else b""
    for _ in range(draw(st.integers(0 if rarely(draw) else 1, 4))):
        head = draw(part_heads())
        blank_line = draw(st.sampled_from([newline, b""])) if rarely(draw) else newline + newline
        content = draw(part_contents)
        if rarely(draw):  # the delimiter itself inside the content
            middle = len(content) // 2
            content = content[:middle] + newline + delimiter + content[middle:]
        body += delimiter + newline + head + blank_line + content + newline
    if not rarely(draw):
        close = b"" if rarely(draw) else b"--"
        body += delimiter + close + draw(st.sampled_from([b"", newline, newline + b"epilogue"]))
    if rarely(draw):
        body = body[: draw(st.integers(0, len(body)))]
    return body


ODD_MULTIPART_TYPES = (
    b"multipart/form-data",
    b"multipart/form-data; boundary=",
    b'multipart/form-data; boundary=""',
    b"multipart/form-data; boundary=a; boundary=b",
    b"multipart/mixed; boundary=boundary",
)
OTHER_TYPES = (
    b"image/png",
    b"image/",
    b"application/octet-stream",
    b"text/plain",
    b"application/json",
    b"application/x-www-form-urlencoded",
    b";",
)


@st.composite
def content_types(draw: st.DrawFn, boundary: bytes) -> bytes | None:
    """The Content-Type header: mostly multipart with the boundary, sometimes anything else."""
    choice = draw(st.integers(0, 9))
    if choice <= 5:
        return b"multipart/form-data; boundary=" + boundary
    if choice == 6:
        return b'Multipart/Form-Data; charset=utf-8; BOUNDARY="' + boundary + b'"'
    if choice == 7:
        return draw(st.sampled_from(ODD_MULTIPART_TYPES))
    if choice == 8:
        return draw(st.sampled_from(OTHER_TYPES))
    return draw(st.one_of(st.none(), header_bytes))


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """What httpx needs for one POST: path, headers, and the body, whole or in chunks."""
    path = draw(st.sampled_from(["/predict", "/predict_batch"]))
    boundary = draw(boundaries)
    content_type = draw(content_types(boundary))
    body = draw(
        st.one_of(part_contents, st.binary(max_size=2000))
        if rarely(draw)
        else multipart_bodies(boundary)
    )
    headers: dict[str, bytes] = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if rarely(draw):
        headers["content-encoding"] = draw(st.sampled_from([b"gzip", b"identity", b"br"]))
    if rarely(draw):
        headers["expect"] = b"100-continue"
    chunks = None
    if draw(st.integers(0, 4)) == 0:  # Transfer-Encoding: chunked, split at random places
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
        chunks = [
            body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)
        ]
    return {"path": path, "headers": headers, "body": body, "chunks": chunks}


@pytest.mark.usefixtures("clean_server_log")
def test_broken_requests_to_the_prediction_routes(client: httpx.Client) -> None:
    @fuzz_settings(250)
    @given(request=requests())
    @example(request={"path": "/predict", "headers": {}, "body": b"", "chunks": None})
    def every_request(request: dict[str, Any]) -> None:
        path, chunks = request["path"], request["chunks"]
        # An iterator makes httpx send the body with Transfer-Encoding: chunked.
        content = request["body"] if chunks is None else iter(chunks)
        response = client.post(path, headers=request["headers"], content=content)
        assert_documented_answer(path, response)

    every_request()


@pytest.mark.usefixtures("clean_server_log")
def test_batches_of_valid_and_damaged_images(client: httpx.Client) -> None:
    """Well-formed batches whose images are anything: answers stay in order, one per image."""

    @fuzz_settings(60)
    @given(images=st.lists(part_contents, min_size=1, max_size=8))
    # Found by the imaging fuzz: this image made /predict and /predict_batch answer 500.
    @example(images=[float_tiff_spanning_float32()])
    def every_batch(images: list[bytes]) -> None:
        files = [
            ("file", (f"{index}.png", image, "image/png")) for index, image in enumerate(images)
        ]
        response = client.post("/predict_batch", files=files)
        assert_documented_answer("/predict_batch", response)
        assert len(response.json()) == len(images)

    every_batch()


@pytest.mark.parametrize(
    "body",
    [
        b"no boundary lines",
        b"--b\r\nX-Other: y\r\n\r\ncontent\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nz\r\n--b--\r\n',
    ],
    ids=["no parts", "no content-disposition", "no field file"],
)
def test_batch_errors_say_how_to_send_a_batch(client: httpx.Client, body: bytes) -> None:
    """Found by the fuzz: /predict_batch's multipart errors told clients to send one image."""
    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/predict_batch", headers=headers, content=body)
    assert response.status_code == 400, response.text
    message = error_message_of(response.status_code, response.content)
    assert "repeated once per image" in message, message
    assert "Send one image" not in message, message
