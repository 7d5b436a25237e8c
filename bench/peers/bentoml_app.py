"""The BentoML peer: the model at PEER_ENTRY served as BentoML 1.4's own examples write a service.

    BENTOML_HOME=<tmp> PEER_ENTRY=<entry> .venv/bin/bentoml serve \\
        bench.peers.bentoml_app:PeerClassifier --host 127.0.0.1 --port PORT

from the repository root; ready when GET /readyz answers 200; then
`curl -F file=@page.jpg http://127.0.0.1:PORT/predict`. No dlops service code: ``@bentoml.service``
with one ``@bentoml.api`` taking the upload as a ``PIL.Image.Image`` (BentoML's type for images: it
opens the multipart part in memory, where a ``Path`` would write a temporary file per request),
around the work every peer shares (bench/peers/work.py). Everything else is BentoML's default
(metrics, timeouts, the thread pool a sync API runs in), as a stock service has it.

The work is ``SpecModel.answers``'s, from the image BentoML opened instead of the bytes: BentoML
calls ``PIL.Image.open`` on the uploaded part (lazily, as ``SpecModel.example`` does; it adds the
part's Content-Type as a format hint, so the client must send the image's true type), then
``SpecModel.example_of`` (``load_reduced`` at the preprocessor's reduction, so a JPEG is still
decoded reduced, then the preprocessor) and ``answers_for`` (one model call, the postprocessor's
answers): the dict ``SpecModel.answers`` gives for the image.

Settings (bench/peers/work.py's; read when the module is imported, because BentoML reads the
service's configuration from the decorators then):

    PEER_ENTRY      the stored model (loaded by each worker's ``__init__``)
    PEER_WORKERS    ``@bentoml.service(workers=...)``: BentoML's worker processes
    PEER_MAX_BATCH  above 1: ``@bentoml.api(batchable=True, max_batch_size=...)``, BentoML's
                    adaptive batching, one model call per batch; the route then takes and answers
                    a list (one image and one dict per request, ``[{...}]``), as every batchable
                    BentoML API does
"""

from __future__ import annotations

from typing import Any

import bentoml
from PIL import Image

from bench.peers import work

WORKERS = work.workers()
MAX_BATCH = work.max_batch()
# BentoML's adaptive batching guide's value: a request waits at most this long for its batch to be
# answered; one that would wait longer gets a 503 (the guide's "Error handling").
MAX_LATENCY_MS = 1000


@bentoml.service(workers=WORKERS)
class PeerClassifier:
    def __init__(self) -> None:
        self.model = work.load_model()

    if MAX_BATCH > 1:

        @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
        def predict(self, file: list[Image.Image]) -> list[dict[str, Any]]:
            try:
                return self.model.answers_for([self.model.example_of(i) for i in file])
            finally:
                for image in file:
                    image.close()

    else:

        @bentoml.api
        def predict(self, file: Image.Image) -> dict[str, Any]:
            with file:
                return self.model.answers_for([self.model.example_of(file)])[0]
