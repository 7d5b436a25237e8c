"""The API page at / and /docs and the schema at /docs.json and /openapi.json (dlops/api/docs.py,
dlops/api/openapi.py), against a real `bentoml serve` and in Debian's Chromium.

The page must contact no other origin (BentoML's stock page loads Google Tag Manager), work
under its strict Content-Security-Policy, and its *Try it out* must give the real answer. The
schema must list every status a route really answers, each as ``{"error": ...}``; with several
models, each model's own routes, described in its labels, and the repository extension.
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
from tests.conftest import (
    DIGITS_10_MODEL,
    FIXTURES,
    MODEL,
    ROOT,
    TEST_API_KEY,
    Server,
    run_import,
    serving,
)
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
    for path in [
        "/v2",
        "/v2/health/ready",
        "/v2/models/{name}/infer",
        "/ui/",
        "/ui/model.json",
        "/ui/models.json",
        "/models",
        "/models/binary_classifier_3/predict",
        "/models/binary_classifier_3/predict_batch",
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
    ]:
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
        # The repository extension is off: neither API_KEY nor DLOPS_REPOSITORY_API is set.
        ("post", "/v2/repository/index", "/v2/repository/index", {}),
        ("post", "/v2/repository/models/{name}/load", f"/v2/repository/models/{model}/load", {}),
        ("post", "/v2/repository/models/{name}/unload", "/v2/repository/models/x/unload", {}),
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
    # The page's list of models is open like the page; the API's, and changing it, need the key.
    assert 401 not in operation_statuses(schema, "get", "/ui/models.json")
    assert 401 in operation_statuses(schema, "get", "/models")
    assert 401 in operation_statuses(schema, "post", "/models/binary_classifier_3/predict")
    for change in ["index", "models/{name}/load", "models/{name}/unload"]:
        assert 401 in operation_statuses(schema, "post", f"/v2/repository/{change}")
        assert 403 in operation_statuses(schema, "post", f"/v2/repository/{change}")
        assert (
            "On in this server."
            in schema["paths"][f"/v2/repository/{change}"]["post"]["description"]
        )
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


# --- several models: each model's routes ---------------------------------------------------------

MULTI_MODELS = ("binary_classifier_3", "digits_10")


@pytest.fixture(scope="module")
def multi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The binary digit model (the default) and the 10-class one in one server, with the
    repository extension on (without a key: the tests load and unload models)."""
    home = tmp_path_factory.mktemp("docs_multi_home")
    for path, name in zip((MODEL, DIGITS_10_MODEL), MULTI_MODELS, strict=True):
        imported = run_import(home, str(path), "--name", name)
        assert imported.returncode == 0, imported.stderr
    log = tmp_path_factory.mktemp("docs_multi") / "serve.log"
    env = {"DLOPS_MODELS": ",".join(MULTI_MODELS), "DLOPS_REPOSITORY_API": "1"}
    yield from serving(Server(home, log, **env))


@pytest.fixture(scope="module")
def multi_client(multi_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=multi_server.url, timeout=30) as session:
        yield session


@pytest.fixture(scope="module")
def multi_schema(multi_client: httpx.Client) -> dict[str, Any]:
    return multi_client.get("/docs.json").json()


@pytest.fixture(scope="module")
def served(multi_client: httpx.Client) -> list[dict[str, Any]]:
    """GET /models' entries."""
    return multi_client.get("/models").json()["models"]


def test_info_names_every_model_and_the_default(
    multi_schema: dict[str, Any], served: list[dict[str, Any]]
) -> None:
    info = multi_schema["info"]
    assert info["x-models"] == [
        {"name": model["name"], "version": model["version"], "default": model["default"]}
        for model in served
    ]
    assert [model["name"] for model in served if model["default"]] == ["binary_classifier_3"]
    assert info["x-model"]["name"] == "binary_classifier_3"
    for model in served:
        assert model["name"] in info["title"]
        assert f"**{model['name']}** (version `{model['version']}`)" in info["description"]
    assert "the default, **binary_classifier_3**, also answers `/predict`" in info["description"]


def test_each_model_has_its_own_routes_described_in_its_labels(
    multi_schema: dict[str, Any], served: list[dict[str, Any]]
) -> None:
    tags = {tag["name"]: tag["description"] for tag in multi_schema["tags"]}
    for model in served:
        name, labels = model["name"], model["labels"]
        tag = f"Model {name}"
        assert f"**{name}**, version `{model['version']}`" in tags[tag]
        for label in labels:
            assert f"`{label}`" in tags[tag]
        predict = multi_schema["paths"][f"/models/{name}/predict"]["post"]
        batch = multi_schema["paths"][f"/models/{name}/predict_batch"]["post"]
        assert predict["tags"] == batch["tags"] == [tag]
        assert f"http://HOST/models/{name}/predict" in predict["description"]
        # Digit models refuse a blank image; every model answers 404 once unloaded.
        assert {400, 404, 413, 415, 422, 503} <= operation_statuses(
            multi_schema, "post", f"/models/{name}/predict"
        )
        example = predict["responses"]["200"]["content"]["application/json"]["example"]
        assert example["label"] in labels
        if model["task"] == "binary":
            assert set(example) == {"proba", "label"}
        else:
            assert set(example) == {"label", "proba", "top_k"}
            assert {entry["label"] for entry in example["top_k"]} <= set(labels)
        batch_example = batch["responses"]["200"]["content"]["application/json"]["example"]
        assert batch_example[0] == example


def test_each_models_real_answers_and_errors_are_as_documented(
    multi_client: httpx.Client, multi_schema: dict[str, Any]
) -> None:
    route = "/models/digits_10/predict"
    answer = multi_client.post(route, files={"file": ("3.png", THREE.read_bytes())})
    assert answer.status_code == 200
    example = multi_schema["paths"][route]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["example"]
    assert set(answer.json()) == set(example) and answer.json()["label"] == "3"
    load, unload = "/v2/repository/models/{name}/load", "/v2/repository/models/{name}/unload"
    failing = [
        ("post", route, route, {"files": {"file": ("a.txt", b"hello")}}),
        ("post", route, route, {"json": {"file": "x"}}),
        ("post", route, route, {"files": {"file": ("white.png", png(255))}}),
        ("post", route, f"{route}?top_k=x", {"files": {"file": ("3.png", THREE.read_bytes())}}),
        ("post", f"{route}_batch", f"{route}_batch", {"files": [("file", b"x")] * 65}),
        ("post", "/v2/repository/index", "/v2/repository/index", {"content": b"[]"}),
        ("post", load, "/v2/repository/models/nope/load", {}),
        ("post", unload, "/v2/repository/models/nope/unload", {}),
        ("post", load, "/v2/repository/models/digits_10/load", {"json": {"parameters": [1]}}),
        ("get", "/v2/models/{name}", "/v2/models/nope", {}),
    ]
    for method, documented, path, arguments in failing:
        response = multi_client.request(method.upper(), path, **arguments)
        assert response.status_code >= 400, (path, response.text)
        assert list(response.json()) == ["error"]
        assert response.status_code in operation_statuses(multi_schema, method, documented), (
            path,
            response.status_code,
        )
    assert (
        "On in this server." in multi_schema["paths"]["/v2/repository/index"]["post"]["description"]
    )


def test_get_models_and_the_v2_model_names_are_the_served_ones(
    multi_client: httpx.Client, multi_schema: dict[str, Any], served: list[dict[str, Any]]
) -> None:
    listed = multi_schema["paths"]["/models"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["example"]
    real = multi_client.get("/models").json()
    assert set(listed) == set(real)  # the worker's memory changes from one request to the next
    assert (listed["default"], listed["models"]) == (real["default"], real["models"])
    for path in ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]:
        (name, *_) = multi_schema["paths"][path]["post"]["parameters"]
        assert name["schema"]["enum"] == [model["name"] for model in served]


def test_try_it_out_on_a_models_own_route_shows_its_answer(
    browser: Browser,  # noqa: F811
    multi_server: Server,
    multi_client: httpx.Client,
) -> None:
    real = multi_client.post(
        "/models/digits_10/predict", files={"file": ("digit.png", THREE.read_bytes())}
    ).json()
    page, problems = open_page(browser, multi_server, viewport={"width": 1200, "height": 900})
    try:
        page.goto(f"{multi_server.url}/docs")
        expect(page.locator(".info .title")).to_contain_text("digits_10")
        page.locator("#operations-Model_digits_10-models__digits_10__predict").click()
        page.get_by_role("button", name="Try it out").click()
        page.locator("input[type=file]").set_input_files(THREE)
        page.get_by_role("button", name="Execute").click()
        answer = page.locator(".live-responses-table .response")
        expect(answer.locator(".response-col_status")).to_have_text("200")
        body = answer.locator(".response-col_description pre").first
        expect(body).to_contain_text('"top_k"')
        assert json.loads(body.inner_text()) == real
    finally:
        page.context.close()
    problems.assert_none(multi_server.url)


def test_the_document_follows_a_model_unloaded_and_loaded_again(
    multi_client: httpx.Client,
) -> None:
    # Last in the file: the other tests expect both models served.
    documented = "/models/digits_10/predict"
    assert documented in multi_client.get("/docs.json").json()["paths"]
    unloaded = multi_client.post("/v2/repository/models/digits_10/unload", timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    try:
        schema = multi_client.get("/docs.json").json()
        assert documented not in schema["paths"]
        assert [model["name"] for model in schema["info"]["x-models"]] == ["binary_classifier_3"]
        gone = multi_client.post(documented, files={"file": ("3.png", THREE.read_bytes())})
        assert gone.status_code == 404
        assert gone.status_code in operation_statuses(
            schema, "post", "/models/binary_classifier_3/predict"
        )
    finally:
        loaded = multi_client.post("/v2/repository/models/digits_10/load", timeout=300)
        assert loaded.status_code == 200, loaded.text
    assert documented in multi_client.get("/docs.json").json()["paths"]
