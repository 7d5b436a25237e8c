"""`bentoml serve`'s arbiter imports service.py but only supervises the workers: what serves
requests (the core, numpy, Pillow, onnxruntime, the /v2 routes) must stay out of it, where it
would only cost memory (dlops/http/lazy_app.py, the imports in ImageClassifier.__init__)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, bentoml_env

SERVING_ONLY = ["numpy", "PIL.Image", "onnxruntime", "dlops.pipeline.core", "dlops.api.v2.routes"]


def test_the_service_module_imports_nothing_that_only_serves(model_home: Path) -> None:
    # Imported as the arbiter imports it (BentoML's loader), the service is complete but idle.
    probe = (
        "import json, sys\n"
        "from bentoml._internal.service.loader import import_service\n"
        "service = import_service('service:ImageClassifier', working_dir='.')\n"
        "mounted = [path for _, path, _ in service.mount_apps]\n"
        f"print(json.dumps([mounted, [m for m in {SERVING_ONLY!r} if m in sys.modules]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=bentoml_env(model_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mounted, imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(mounted) == ["/", "/ui"]
    assert imported == []
