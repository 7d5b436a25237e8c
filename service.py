"""Is this handwritten digit a 3? An ONNX classifier served by BentoML.

curl -F file=@digit.png http://localhost:3000/predict   ->   {"proba": 0.97, "label": "3"}
"""

from __future__ import annotations

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
from dlops.imaging import ImageError, to_model_input
from dlops.inference import BackgroundLoader, BinaryImageClassifier
from dlops.upload import ImageBatchUpload, ImageUpload, batch_image_bytes, image_bytes


class Prediction(BaseModel):
    proba: float = Field(description="Probability that the image shows a 3, from 0 to 1")
    label: str = Field(description='"3" when proba is above the threshold, else "no 3"')


@bentoml.service(
    name="dlops",
    service_class=DirectRouteService,
    workers=config.WORKERS,
    traffic={"timeout": config.REQUEST_TIMEOUT_SECONDS},
    logging={"access": {"enabled": config.ACCESS_LOG}},
)
class DigitClassifier:
    """POST an image of a handwritten digit to /predict; readiness at /readyz."""

    model = BentoModel(config.MODEL_TAG)

    def __init__(self) -> None:
        stored = self.model
        metadata = stored.info.metadata
        self.image_size = int(metadata["image_size"])
        self.loader = BackgroundLoader(
            partial(
                BinaryImageClassifier.from_metadata,
                Path(stored.path),
                metadata,
                config.MODEL_FILE_NAME,
            )
        )

    def __is_ready__(self) -> bool:
        return self.loader.is_ready

    def pixels(self, image: bytes) -> np.ndarray:
        try:
            return to_model_input(image, size=self.image_size, max_pixels=config.MAX_IMAGE_PIXELS)
        except ImageError as error:
            raise ClientError(str(error), error.status) from None

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
