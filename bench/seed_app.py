"""The seed article's FastAPI endpoint, kept as the benchmark's peer: `uvicorn bench.seed_app:app`.

A faithful copy: same model file, same default onnxruntime session, same per-request work. Only
two lines differ from the article: the model path is anchored to the repository (so it does not
depend on the working directory), and the logit is taken out of its [1, 1] array before
``math.exp`` (numpy 2 refuses to turn a 2-D array into a scalar, so the article's line no longer
runs). Names, the missing type hints and the misspelt constant are the article's, on purpose.
Do not "improve" this file: it is what the service is measured against.
"""

import io
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, UploadFile
from PIL import Image

app = FastAPI()
ort_session = ort.InferenceSession(
    str(Path(__file__).resolve().parent.parent / "models" / "binary_classifier_3.onnx")
)
TRHESHOLD = 0.5


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


@app.post("/predict")
async def predict(file: UploadFile = File(...)):  # noqa: B008 - the article's signature
    request_object_content = await file.read()
    img = Image.open(io.BytesIO(request_object_content))
    input = np.expand_dims(np.array(img, dtype=np.uint8), axis=0)
    ort_output = ort_session.run(["output"], {"input": input})[0]
    output = sigmoid(ort_output.item())
    return {"proba": output, "label": "3" if output > TRHESHOLD else "no 3"}
