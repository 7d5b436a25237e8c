"""Is this handwritten digit a 3? An ONNX classifier served by BentoML.

curl -F file=@digit.png http://localhost:3000/predict   ->   {"proba": 0.97, "label": "3"}
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.models import BentoModel
from pydantic import BaseModel, Field

from dlops import config
from dlops.direct_route import DirectRouteService, direct_route
from dlops.errors import ClientError, JsonErrorMiddleware
from dlops.imaging import ImageError, decode_image, to_mnist_digit
from dlops.inference import BackgroundLoader, BinaryImageClassifier
from dlops.kserve import app as open_inference_app
from dlops.metrics import error_kind, prediction_metrics
from dlops.model_store import check_stored_model
from dlops.ui import ui_app
from dlops.upload import ImageBatchUpload, ImageUpload, batch_image_bytes, image_bytes

# A missing or damaged model stops `bentoml serve` here, with one line saying what to run,
# before any worker starts.
check_stored_model(config.MODEL_TAG)


class Prediction(BaseModel):
    proba: float = Field(description="Probability that the image shows a 3, from 0 to 1")
    label: str = Field(description='"3" when proba is above the threshold, else "no 3"')


# The page at /ui (dlops/static): draw a digit or upload an image, see the answer of /predict.
@bentoml.asgi_app(ui_app, path="/ui")
# The Open Inference Protocol (KServe V2) under /v2 (dlops/kserve.py: why it is mounted at "/").
@bentoml.asgi_app(open_inference_app, path="/")
@bentoml.service(
    name="dlops",
    service_class=DirectRouteService,
    workers=config.WORKERS,
    traffic={"timeout": config.REQUEST_TIMEOUT_SECONDS},
    logging={"access": {"enabled": config.ACCESS_LOG}},
)
class DigitClassifier:
    """Is this handwritten digit a 3? POST an image to `/predict`:
    `curl -F file=@digit.png http://HOST/predict` answers `{"proba": 0.97, "label": "3"}`.

    - [Try it in the browser](ui/): draw a digit or upload an image.
    - `/predict_batch`: many images in one request; `/v2/...`: the Open Inference Protocol
      (KServe V2) for tritonclient and KServe users.
    - `/readyz` is 200 once the model is loaded; `/metrics` for Prometheus.
    """

    model = BentoModel(config.MODEL_TAG)

    def __init__(self) -> None:
        stored = self.model
        metadata = stored.info.metadata
        self.image_size = int(metadata["image_size"])
        self.metrics = prediction_metrics()
        self.loader = BackgroundLoader(
            partial(
                BinaryImageClassifier.from_metadata,
                Path(stored.path),
                metadata,
                config.MODEL_FILE_NAME,
                observer=self.metrics.inferred,
            )
        )

    def __is_ready__(self) -> bool:
        return self.loader.is_ready

    def pixels(self, image: bytes) -> np.ndarray:
        """Decode and normalise one encoded image, timing both; a bad image is a ClientError."""
        started = time.perf_counter()
        try:
            decoded = decode_image(image, max_pixels=config.MAX_IMAGE_PIXELS)
            decoded_at = time.perf_counter()
            pixels = to_mnist_digit(decoded, size=self.image_size)
        except ImageError as error:
            raise ClientError(str(error), error.status, kind=error_kind(error)) from None
        self.metrics.prepared(decoded_at - started, time.perf_counter() - decoded_at)
        return pixels

    # The direct routes answer POST /predict and /predict_batch over HTTP by calling these two
    # methods (dlops/direct_route.py); the @bentoml.api declarations further down give the routes
    # their OpenAPI schema, Swagger UI form and bentoml clients, and serve in-process calls.
    @direct_route("/predict", read=image_bytes)
    def classify(self, image: bytes) -> dict[str, Any]:
        """Decode, normalise and classify one encoded image."""
        pixels = self.pixels(image)
        classifier = self.loader.get(timeout=config.MODEL_WAIT_SECONDS)
        (answer,) = classifier.predict(np.expand_dims(pixels, 0))
        return {"proba": answer.proba, "label": answer.label}

    @direct_route("/predict_batch", read=batch_image_bytes)
    def classify_batch(self, images: list[bytes]) -> list[dict[str, Any]]:
        """One answer per image, in order, from one model call; a bad image gets its own error."""
        answers: list[dict[str, Any]] = [{} for _ in images]
        readable: list[int] = []
        batch: list[np.ndarray] = []
        for index, image in enumerate(images):
            try:
                batch.append(self.pixels(image))
                readable.append(index)
            except ClientError as error:
                self.metrics.failed(error.kind)
                answers[index] = {"error": error.message, "status": int(error.error_code)}
        if batch:
            classifier = self.loader.get(timeout=config.MODEL_WAIT_SECONDS)
            for index, answer in zip(readable, classifier.predict(np.stack(batch)), strict=True):
                answers[index] = {"proba": answer.proba, "label": answer.label}
        return answers

    @bentoml.api(input_spec=ImageUpload, route="/predict")
    def predict(self, file: bytes) -> Prediction:
        """Classify one image (PNG, JPEG, GIF, BMP, WebP or TIFF): {"proba": 0.97, "label": "3"}."""
        return Prediction(**self.classify(file))

    @bentoml.api(input_spec=ImageBatchUpload, route="/predict_batch")
    def predict_batch(self, file: list[bytes]) -> list[dict[str, Any]]:
        """Classify many images (the field `file`, repeated): one answer per image, in order.

        An answer is {"proba": ..., "label": ...}, or {"error": ..., "status": 4xx} for an image
        that cannot be read; the other images are still classified.
        """
        return self.classify_batch(file)


# Every error response of BentoML's own routes (404, 405, ...) leaves as {"error": ...} too.
DigitClassifier.add_asgi_middleware(JsonErrorMiddleware)
