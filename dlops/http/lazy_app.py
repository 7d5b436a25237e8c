"""A mounted Starlette app imported when a worker first needs it, not in the arbiter.

`bentoml serve` imports the service module in its arbiter too, a process that only supervises
the workers and never answers a request. Importing the Open Inference Protocol app there
imports the core, numpy and Pillow (~20 MiB of the arbiter's memory for nothing).
``LazyApp("dlops.api.v2.routes", "app")`` stands in for it: a Starlette app (BentoML's PassiveMount
only routes to a Starlette app the requests that one of its routes matches) whose routes and
calls are the real app's, imported on first use: when the worker starts, as BentoML runs the
lifespan of the apps it mounts, so no request waits for the import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Router


class LazyApp(Starlette):
    # Starlette.__init__ is not called: every use goes to the real app, built by its module.
    def __init__(
        self,
        module: str,
        attribute: str,
        answers_straight: Callable[[str], str | None] | None = None,
    ) -> None:
        self._target = (module, attribute)
        self._app: Starlette | None = None
        self._answers_straight = answers_straight

    def direct_route_of(self, path: str) -> str | None:
        """The route of the POSTs to ``path`` if this app answers them straight from ASGI,
        before BentoML's middleware (dlops/http/direct_route.py), else None."""
        return None if self._answers_straight is None else self._answers_straight(path)

    def load(self) -> Starlette:
        if self._app is None:
            module, attribute = self._target
            self._app = getattr(importlib.import_module(module), attribute)
        return self._app

    @property
    def routes(self) -> list[BaseRoute]:
        return self.load().routes

    @property
    def router(self) -> Router:
        # BentoML runs the lifespan of the apps it mounts as a worker starts: the import is then.
        return self.load().router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.load()(scope, receive, send)
