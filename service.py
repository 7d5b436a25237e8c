"""ONNX image classifiers, served by BentoML with the preprocessing and labels stored with each.

curl -F file=@digit.png http://localhost:3000/predict   ->   {"proba": 0.97, "label": "3"}

DLOPS_MODELS=a,b,c serves several models (the first answers /predict; each /models/{name}/...),
loaded, reloaded and unloaded without a restart through /v2/repository (dlops/serving/models.py).
"""

from __future__ import annotations

from typing import Any

import bentoml
from bentoml.models import BentoModel
from pydantic import BaseModel, Field

from dlops import config
from dlops.api.docs import DocumentedService
from dlops.api.ui import ui_app
from dlops.api.v2 import infer_route_of
from dlops.http.direct_route import direct_route
from dlops.http.errors import JsonErrorMiddleware
from dlops.http.lazy_app import LazyApp
from dlops.http.upload import ImageBatchUpload, ImageUpload, batch_image_bytes, image_bytes
from dlops.model.store import check_stored_models
from dlops.serving.server_state import server_folder

# `bentoml serve`'s arbiter imports this module too, and only supervises: what serves requests
# (the core, numpy, Pillow, onnxruntime) is imported by the workers, in __init__ and LazyApp.
# Its inference route is answered straight from ASGI, as /predict is (dlops/http/direct_route.py).
open_inference_app = LazyApp("dlops.api.v2.routes", "app", answers_straight=infer_route_of)

# A missing or damaged model stops `bentoml serve` here, with one line saying what to run,
# before any worker starts; the versions found are the ones every worker serves, and the ones a
# built image packs and serves (the `envs` below become its DLOPS_MODELS).
SERVED_MODELS = check_stored_models(config.MODELS)
# Made by the arbiter, inherited by its workers (dlops/serving/server_state.py).
SERVER_FOLDER = server_folder()


class RankedClass(BaseModel):
    label: str
    index: int = Field(description="The class's position in the model's output")
    proba: float


class Prediction(BaseModel):
    """A binary model answers proba and label; a multi-class one adds top_k."""

    proba: float = Field(
        description="Binary models: P(positive label). Multi-class: the probability of `label`"
    )
    label: str = Field(description="The answer: thresholded (binary) or the most probable class")
    top_k: list[RankedClass] | None = Field(
        default=None, description="Multi-class only: the most probable classes, best first"
    )


# The page at /ui (dlops/api/static): draw or upload an image, see the answer of /predict.
@bentoml.asgi_app(ui_app, path="/ui")
# The Open Inference Protocol (KServe V2) under /v2 (dlops/api/v2/routes.py: why it is mounted at
# "/").
@bentoml.asgi_app(open_inference_app, path="/")
@bentoml.service(
    name="dlops",
    service_class=DocumentedService,
    workers=config.WORKERS,
    traffic={"timeout": config.REQUEST_TIMEOUT_SECONDS},
    envs=[{"name": "DLOPS_MODELS", "value": ",".join(SERVED_MODELS)}],
    logging={"access": {"enabled": config.ACCESS_LOG}},
)
class ImageClassifier:
    """Classify an image: POST it to `/predict`, e.g.
    `curl -F file=@digit.png http://HOST/predict` answers `{"proba": 0.97, "label": "3"}`.

    - [Try it in the browser](ui/): draw or upload an image.
    - `/predict_batch`: many images in one request; `/v2/...`: the Open Inference Protocol
      (KServe V2) for tritonclient and KServe users.
    - `/readyz` is 200 once the model is loaded; `/metrics` for Prometheus.
    """

    # The default model; the others are added to the service's models below: `bentoml build`
    # packs them all.
    model = BentoModel(SERVED_MODELS[0])

    def __init__(self) -> None:
        from dlops.serving.models import serve_models

        self.in_step = serve_models(SERVER_FOLDER)
        self.repository = self.in_step.repository

    def __is_ready__(self) -> bool:
        return self.repository.is_ready

    # The direct routes answer POST /predict, /predict_batch and /models/{model}/... over HTTP by
    # calling these two methods (dlops/http/direct_route.py); the @bentoml.api declarations further
    # down give the routes their OpenAPI schema, Swagger UI form and bentoml clients, and serve
    # in-process calls.
    @direct_route("/predict", read=image_bytes)
    @direct_route("/models/{model}/predict", read=image_bytes)
    async def classify(
        self, image: bytes, top_k: int | None = None, model: str | None = None
    ) -> dict[str, Any]:
        core = self.repository.core(model)
        outcome = await core.classify_files([image])
        if outcome.errors:
            raise outcome.errors[0]
        return core.answer(outcome.probabilities[0], top_k)

    @direct_route("/predict_batch", read=batch_image_bytes)
    @direct_route("/models/{model}/predict_batch", read=batch_image_bytes)
    async def classify_batch(
        self, images: list[bytes], top_k: int | None = None, model: str | None = None
    ) -> list[dict[str, Any]]:
        """One answer per image, in order, from one model call; a bad image gets its own error."""
        core = self.repository.core(model)
        return core.answers(await core.classify_files(images), top_k)

    @bentoml.api(input_spec=ImageUpload, route="/predict")
    async def predict(self, file: bytes) -> Prediction:
        """Classify one image (PNG, JPEG, GIF, BMP, WebP, TIFF, HEIC or AVIF): {"proba": 0.97, ...}.

        Binary models answer {"proba": 0.97, "label": "3"}. Multi-class models add `top_k`, the
        most probable classes (`?top_k=N`; 0 for all); multi-label ones answer `labels`, every
        label at or above the threshold.
        """
        return Prediction(**await self.classify(file))

    @bentoml.api(input_spec=ImageBatchUpload, route="/predict_batch")
    async def predict_batch(self, file: list[bytes]) -> list[dict[str, Any]]:
        """Classify many images (the field `file`, repeated): one answer per image, in order.

        An answer is what /predict answers, or {"error": ..., "status": 4xx} for an image that
        cannot be read; the other images are still classified.
        """
        return await self.classify_batch(file)


ImageClassifier.models.extend(BentoModel(tag) for tag in SERVED_MODELS[1:])
# Every error response of BentoML's own routes (404, 405, ...) leaves as {"error": ...} too.
ImageClassifier.add_asgi_middleware(JsonErrorMiddleware)
