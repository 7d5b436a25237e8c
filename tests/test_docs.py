"""The API page at / and /docs and the schema at /docs.json and /openapi.json (dlops/docs.py,
dlops/openapi.py), against a real `bentoml serve` and in Debian's Chromium.

The page must contact no other origin (BentoML's stock page loads Google Tag Manager), work
under its strict Content-Security-Policy, and its *Try it out* must give the real answer. The
schema must list every status a route really answers, each as ``{"error": ...}``.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from dlops import __version__
from tests.conftest import FIXTURES, ROOT, TEST_API_KEY, Server
from tests.test_ui import browser, open_page, playwright_driver  # noqa: F401 (fixtures)

THREE = FIXTURES / "digits" / "test0300_digit3.png"
PAGES = ["/", "/docs"]


@pytest.fixture(scope="module")
def schema(client: httpx.Client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def operation_statuses(schema: dict[str, Any], method: str, path: str) -> set[int]:
    return {int(status) for status in schema["paths"][path][method]["responses"]}


# --- the page over plain HTTP -----------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_the_page_is_ours_strict_and_all_its_files_are_served_here(
    client: httpx.Client, path: str
) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "googletagmanager" not in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in references)
    for reference in references:
        assert "//" not in reference, reference  # relative: this service only
        assert client.get(f"/{reference}").status_code == 200, reference


def test_openapi_json_is_the_same_schema_as_docs_json(client: httpx.Client) -> None:
    docs, openapi = client.get("/docs.json"), client.get("/openapi.json")
    assert docs.status_code == openapi.status_code == 200
    assert docs.headers["content-type"] == "application/json"
    assert docs.json() == openapi.json()


def test_only_get_reads_the_page_and_a_missing_file_is_a_json_404(client: httpx.Client) -> None:
    refused = client.post("/docs", content=b"x")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert list(refused.json()) == ["error"]
    missing = client.get("/docs/static/nope.js")
    assert missing.status_code == 404
    assert list(missing.json()) == ["error"]


# --- what the schema says -----------------------------------------------------------------------


def test_info_names_the_model_the_package_and_the_project(
    client: httpx.Client, schema: dict[str, Any]
) -> None:
    model = client.get("/ui/model.json").json()
    info = schema["info"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert info["version"] == __version__ == pyproject["project"]["version"]
    assert model["name"] in info["title"]
    assert info["x-model"] == {"name": model["name"], "version": model["version"]}
    assert model["version"] in info["description"]
    assert info["contact"] == {"name": "dlops"}
    assert "None" not in json.dumps(info)


def test_every_error_is_one_json_key_with_an_example(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["error"]
    assert components["Error"]["additionalProperties"] is False
    assert not {"InvalidArgument", "NotFound", "InternalServerError"} & set(components)
    errors = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                errors += 1
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, status)
                example = content["example"]
                assert list(example) == ["error"] and example["error"], (method, path, status)
    assert errors > 20


def test_v2_and_the_page_are_described(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for path in ["/v2", "/v2/health/ready", "/v2/models/{name}/infer", "/ui/", "/ui/model.json"]:
        assert path in paths
    infer = paths["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert [p["name"] for p in infer["parameters"]] == ["name", "version"]
    assert "application/json" in infer["requestBody"]["content"]


def png(colour: int, size: int = 28) -> bytes:
    data = io.BytesIO()
    Image.new("L", (size, size), colour).save(data, "PNG")
    return data.getvalue()


def real_requests(model: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, documented path, real path, httpx arguments): requests that fail for real."""
    infer = f"/v2/models/{model}/infer"
    return [
        ("post", "/predict", "/predict", {"files": {"file": ("a.txt", b"hello")}}),
        ("post", "/predict", "/predict", {"json": {"file": "x"}}),
        ("post", "/predict", "/predict", {"files": {"file": ("white.png", png(255))}}),
        ("post", "/predict", "/predict", {"content": b"0" * (10 * 2**20 + 1)}),
        (
            "post",
            "/predict",
            "/predict?top_k=x",
            {"files": {"file": ("3.png", THREE.read_bytes())}},
        ),
        ("post", "/predict_batch", "/predict_batch", {"content": b"x"}),
        ("post", "/predict_batch", "/predict_batch", {"files": [("file", b"x")] * 65}),
        ("get", "/v2/models/{name}", "/v2/models/nope", {}),
        ("get", "/v2/models/{name}/ready", "/v2/models/nope/ready", {}),
        ("post", "/v2/models/{name}/infer", infer, {"content": b"{"}),
        ("post", "/v2/models/{name}/infer", infer, {"json": {"inputs": []}}),
        ("post", "/v2/models/{name}/infer", "/v2/models/nope/infer", {"json": {"inputs": []}}),
    ]


def test_each_real_error_status_is_listed_for_its_operation(
    client: httpx.Client, schema: dict[str, Any]
) -> None:
    model = client.get("/ui/model.json").json()["name"]
    for method, documented, path, arguments in real_requests(model):
        response = client.request(method.upper(), path, **arguments)
        assert response.status_code >= 400, (path, response.text)
        assert list(response.json()) == ["error"]
        assert response.status_code in operation_statuses(schema, method, documented), (
            method,
            path,
            response.status_code,
            response.text,
        )


def test_the_predict_example_is_the_real_answer(
    client: httpx.Client, schema: dict[str, Any]
) -> None:
    predict = schema["paths"]["/predict"]["post"]
    example = predict["responses"]["200"]["content"]["application/json"]["example"]
    real = client.post("/predict", files={"file": ("digit.png", THREE.read_bytes())}).json()
    assert example == real
    assert "curl -F file=@digit.png http://HOST/predict" in predict["description"]
    assert json.dumps(real) in predict["description"]


def test_with_an_api_key_the_page_stays_open_and_the_schema_asks_for_the_key(
    keyed_server: Server,
) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=30) as anonymous:
        for path in ["/docs", "/openapi.json", "/docs/static/init.js"]:
            assert anonymous.get(path).status_code == 200, path
        schema = anonymous.get("/openapi.json").json()
        refused = anonymous.post("/predict", files={"file": ("a.png", THREE.read_bytes())})
    assert refused.status_code == 401
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert 401 in operation_statuses(schema, "post", "/predict")
    assert schema["paths"]["/predict"]["post"]["security"]
    assert 401 not in operation_statuses(schema, "get", "/readyz")
    assert 401 not in operation_statuses(schema, "get", "/v2/health/ready")
    assert TEST_API_KEY not in json.dumps(schema)


# --- the page in Chromium -----------------------------------------------------------------------


@pytest.fixture(params=PAGES)
def api_page(request: pytest.FixtureRequest, browser: Browser, server: Server) -> Iterator[Page]:  # noqa: F811
    # test_ui's page, with every request to another origin aborted and recorded; then ours.
    page, problems = open_page(browser, server, viewport={"width": 1200, "height": 900})
    page.goto(f"{server.url}{request.param}")
    yield page
    page.context.close()
    problems.assert_none(server.url)


def test_try_it_out_uploads_an_image_and_shows_the_real_answer(
    api_page: Page, client: httpx.Client
) -> None:
    real = client.post("/predict", files={"file": ("digit.png", THREE.read_bytes())}).json()
    expect(api_page.locator(".info .title")).to_contain_text("dlops")
    expect(api_page.locator(".info .title .version").first).to_have_text("0.1.0")
    api_page.locator("#operations-Service_APIs-dlops__predict").click()
    api_page.get_by_role("button", name="Try it out").click()
    api_page.locator("input[type=file]").set_input_files(THREE)
    api_page.get_by_role("button", name="Execute").click()
    answer = api_page.locator(".live-responses-table .response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    body = answer.locator(".response-col_description pre").first
    expect(body).to_contain_text('"label"')
    assert json.loads(body.inner_text()) == real
    # The operations BentoML does not know of are on the page too.
    expect(api_page.get_by_text("/v2/models/{name}/infer").first).to_be_visible()
