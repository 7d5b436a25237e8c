"""The optional API key (API_KEY): required everywhere but health, metrics, docs and /ui."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FIXTURES, TEST_API_KEY, Server

KEY = TEST_API_KEY
THREE = FIXTURES / "digits" / "test0300_digit3.png"


@pytest.fixture
def anonymous(keyed_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as session:
        yield session


def predict(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post("/predict", files={"file": ("3.png", THREE.read_bytes())}, headers=headers)


def assert_unauthorized(response: httpx.Response, *fragments: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert list(response.json()) == ["error"]
    message = response.json()["error"]
    assert "Authorization: Bearer <key>" in message and "X-API-Key" in message
    for fragment in fragments:
        assert fragment in message
    assert KEY not in message


def test_a_request_without_the_key_is_401(anonymous: httpx.Client) -> None:
    assert_unauthorized(predict(anonymous), "/predict needs an API key")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY[:-1]},
    ],
    ids=["wrong", "longer", "not-bearer", "shorter"],
)
def test_a_wrong_key_is_401(anonymous: httpx.Client, headers: dict[str, str]) -> None:
    response = predict(anonymous, **headers)
    assert_unauthorized(response)


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}],
    ids=["bearer", "lowercase", "x-api-key"],
)
def test_the_right_key_is_answered(anonymous: httpx.Client, headers: dict[str, str]) -> None:
    response = predict(anonymous, **headers)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "3"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict_batch"),
        ("POST", "/v2/models/binary_classifier_3/infer"),
        ("GET", "/v2/models/binary_classifier_3"),
        ("POST", "/an/endpoint/added/later"),
        ("POST", "/metrics"),
    ],
)
def test_every_other_endpoint_needs_the_key(
    anonymous: httpx.Client, method: str, path: str
) -> None:
    assert_unauthorized(anonymous.request(method, path, content=b"x"))
    with_key = anonymous.request(method, path, content=b"x", headers={"X-API-Key": KEY})
    assert with_key.status_code != 401


@pytest.mark.parametrize(
    "path", ["/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/", "/ui", "/ui/"]
)
def test_health_metrics_docs_and_the_page_stay_open(anonymous: httpx.Client, path: str) -> None:
    assert anonymous.get(path, follow_redirects=True).status_code == 200


def test_refusals_are_counted_and_the_key_is_never_logged(
    anonymous: httpx.Client, keyed_server: Server
) -> None:
    def refused() -> float:
        text = anonymous.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "dlops_errors_total"
            and sample.labels == {"model": "", "kind": "unauthorized"}
        )

    before = refused()
    predict(anonymous, Authorization="Bearer nope")
    predict(anonymous, Authorization=f"Bearer {KEY}")
    assert refused() == before + 1
    assert KEY not in keyed_server.log()
