"""The reach-ins of dlops/compat.py still find their targets in the installed libraries."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from prometheus_client import CollectorRegistry, Histogram

from dlops import compat


def test_written_for_the_installed_releases() -> None:
    """A dependency bump fails here first: re-check each reach-in, then update WRITTEN_FOR."""
    assert {
        "bentoml": version("bentoml"),
        "prometheus-client": version("prometheus-client"),
        "uvicorn": version("uvicorn"),
    } == compat.WRITTEN_FOR
    assert compat.WRITTEN_FOR["bentoml"] == "1.4.40"


def test_histogram_counters_add_like_observe() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", buckets=(1.0, 2.0), registry=registry)
    buckets, total = compat.histogram_counters(histogram)
    buckets[1].inc(3)
    total.inc(4.5)
    histogram.observe(0.5)
    assert registry.get_sample_value("h_bucket", {"le": "1.0"}) == 1
    assert registry.get_sample_value("h_bucket", {"le": "2.0"}) == 4
    assert registry.get_sample_value("h_sum") == 5.0


def test_histogram_counters_fail_loudly_when_moved() -> None:
    with pytest.raises(compat.LibraryMoved, match=r"prometheus-client .* dlops/compat\.py"):
        compat.histogram_counters(object())


def test_bentoml_timeout_middleware_is_found() -> None:
    middleware = compat.bentoml_timeout_middleware()
    assert middleware.__name__ == "TimeoutMiddleware"


def test_user_middleware_of_an_unbuilt_app() -> None:
    from starlette.applications import Starlette

    app = Starlette()
    assert compat.starlette_user_middleware(app) is app.user_middleware
    with pytest.raises(compat.LibraryMoved):
        compat.starlette_user_middleware(object())


def test_bentoml_home() -> None:
    assert compat.bentoml_home().is_absolute()


def test_uvicorn_http_protocol_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn.config

    protocols = dict(uvicorn.config.HTTP_PROTOCOLS)
    monkeypatch.setattr(uvicorn.config, "HTTP_PROTOCOLS", protocols)
    compat.use_uvicorn_http_protocol("dlops.http.guard:GuardedHttpToolsProtocol")
    config = uvicorn.config.Config(app=lambda scope, receive, send: None, http="auto")
    config.load()
    from dlops.http.guard import GuardedHttpToolsProtocol

    assert config.http_protocol_class is GuardedHttpToolsProtocol


def test_uvicorn_http_protocol_fails_loudly_when_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn.config

    monkeypatch.setattr(uvicorn.config, "HTTP_PROTOCOLS", {"h11": "x"})
    with pytest.raises(compat.LibraryMoved, match="uvicorn"):
        compat.use_uvicorn_http_protocol("dlops.http.guard:GuardedHttpToolsProtocol")


def test_bentoml_ships_the_swagger_ui_files() -> None:
    folder = compat.bentoml_swagger_ui_dir()
    bundle = (folder / "swagger-ui-bundle.js").read_text()
    assert "SwaggerUIBundle" in bundle
    assert "googletagmanager" not in bundle  # the tracker is in BentoML's page, not in these


def test_bentoml_openapi_document_of_a_service() -> None:
    import bentoml

    @bentoml.service(name="compat_probe")
    class Probe:
        @bentoml.api
        def echo(self, text: str) -> str:
            return text

    document = compat.bentoml_openapi_document(Probe)
    assert "/echo" in document["paths"]
    assert document["info"]["title"] == "compat_probe"
    with pytest.raises(compat.LibraryMoved, match="openapi_spec"):
        compat.bentoml_openapi_document(object())
