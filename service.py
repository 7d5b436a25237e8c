"""Is this handwritten digit a 3? An ONNX classifier served by BentoML.

curl -F file=@digit.png http://localhost:3000/predict   ->   {"proba": 0.97, "label": "3"}
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import bentoml
import numpy as np
from bentoml.models import BentoModel
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from dlops import config
from dlops.errors import ClientError, JsonErrorMiddleware, install_quiet_client_errors
from dlops.imaging import ImageError, to_model_input
from dlops.inference import BackgroundLoader, BinaryImageClassifier, ModelNotReady
from dlops.upload import ImageUpload

install_quiet_client_errors()


class Prediction(BaseModel):
    proba: float = Field(description="Probability that the image shows a 3, from 0 to 1")
    label: str = Field(description='"3" when proba is above the threshold, else "no 3"')


@bentoml.service(
    name="dlops",
    workers=config.WORKERS,
    traffic={"timeout": config.REQUEST_TIMEOUT_SECONDS},
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

    @bentoml.api(input_spec=ImageUpload, route="/predict")
    def predict(self, file: bytes) -> Prediction:
        """Classify one image (PNG, JPEG, GIF, BMP, WebP or TIFF): {"proba": 0.97, "label": "3"}."""
        try:
            pixels = to_model_input(file, size=self.image_size, max_pixels=config.MAX_IMAGE_PIXELS)
        except ImageError as error:
            raise ClientError(str(error), error.status) from None
        try:
            classifier = self.loader.get(timeout=config.MODEL_WAIT_SECONDS)
        except ModelNotReady as error:
            # BentoML hides the message of any 5xx exception; a response passes through as is.
            return JSONResponse(  # type: ignore[return-value]
                {"error": f"{error}; retry shortly"}, status_code=503, headers={"Retry-After": "1"}
            )
        (answer,) = classifier.predict(np.expand_dims(pixels, 0))
        return Prediction(proba=answer.proba, label=answer.label)


DigitClassifier.add_asgi_middleware(JsonErrorMiddleware)
