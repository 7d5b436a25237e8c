"""The API page: Swagger UI at / and /docs, the OpenAPI schema at /docs.json and /openapi.json.

BentoML's own page loads Google Tag Manager, whatever the analytics setting, and shows its
boilerplate; FastAPI users (and the article this service replaces) expect /docs and
/openapi.json. This ASGI middleware answers those paths before BentoML's app does, with
``dlops/api/static_docs/index.html`` (no inline script or style) and the Swagger UI files that
BentoML ships in its package (dlops/compat.py finds them), all under the page's strict
Content-Security-Policy (dlops/api/ui.py): the page works offline and contacts nothing but this
service. The schema is dlops/api/openapi.py's.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse, JSONResponse, Response

from dlops import config
from dlops.api.ui import PageMiddleware
from dlops.compat import SWAGGER_UI_FILES, bentoml_swagger_ui_dir
from dlops.http.direct_route import DirectRouteService

logger = logging.getLogger(config.LOGGER_NAME)

PAGE_DIR = Path(__file__).resolve().parent / "static_docs"
PAGE_PATHS = frozenset(["/", "/docs"])
SCHEMA_PATHS = frozenset(["/docs.json", "/openapi.json"])
# The page's files, relative to / and /docs alike: "docs/static/<name>".
ASSET_PREFIX = "/docs/static/"
OWN_ASSETS = ("init.js", "docs.css", "copy.svg", "select.svg", "check.svg", "expand.svg")


class ApiPage:
    """ASGI middleware answering the page, its files and the schema; other paths go on."""

    def __init__(self, app: Any, service: Any) -> None:
        self.app = app
        self.service = service
        swagger = bentoml_swagger_ui_dir()
        self.assets = {name: PAGE_DIR / name for name in OWN_ASSETS}
        self.assets.update({name: swagger / name for name in SWAGGER_UI_FILES})
        self._schema = b""
        self._schema_of: tuple[Any, ...] = ()  # the models it describes
        self.page = PageMiddleware(self.serve)

    def schema(self) -> bytes:
        """Built in the worker, whose service instance knows the models served, on first use
        and again once they change (/v2/repository) or have loaded (the examples list them)."""
        import bentoml

        from dlops.api.openapi import openapi_document, served_versions

        repository = bentoml.get_current_service().repository
        versions = served_versions(repository)
        served = (
            repository.default_name,
            repository.is_ready,
            *((each.name, each.version) for each in versions),
        )
        if served != self._schema_of:
            document = openapi_document(self.service, repository, versions)
            self._schema, self._schema_of = json.dumps(document).encode(), served
        return self._schema

    def owns(self, path: str) -> bool:
        if path in PAGE_PATHS or path in SCHEMA_PATHS:
            return True
        return path.startswith(ASSET_PREFIX) and path[len(ASSET_PREFIX) :] in self.assets

    def response(self, path: str) -> Response:
        """What answers GET ``path``, one of the paths this middleware owns."""
        if path in PAGE_PATHS:
            return FileResponse(PAGE_DIR / "index.html", media_type="text/html")
        if path in SCHEMA_PATHS:
            try:
                return Response(self.schema(), media_type="application/json")
            except Exception:  # a bug of ours: logged with its traceback, answered as JSON
                logger.exception("%s: the OpenAPI document could not be built", path)
                return JSONResponse(
                    {
                        "error": "the server failed to build its OpenAPI document (a bug, now "
                        "in its log)"
                    },
                    status_code=HTTPStatus.INTERNAL_SERVER_ERROR,
                )
        return FileResponse(self.assets[path[len(ASSET_PREFIX) :]])

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.response(scope["path"])(scope, receive, send)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.owns(scope["path"]):
            # The /ui page's middleware: its security headers, and a JSON 405 but for GET/HEAD.
            await self.page(scope, receive, send)
            return
        await self.app(scope, receive, send)


class DocumentedService(DirectRouteService):
    """The service with dlops' API page at / and /docs and its schema, instead of BentoML's."""

    def api_page(self, app: Any) -> Any:
        return ApiPage(app, self)
