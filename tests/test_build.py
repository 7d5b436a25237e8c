"""`bentoml build` packs the service with its code and every model it serves, and pins them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BENTOML, ROOT, bentoml_env

# A model other than the default one first: it is the one the image answers /predict with.
TWO_MODELS = ("orientation", "binary_classifier_3")


def stored_version(home: Path, name: str) -> str:
    return (home / "models" / name / "latest").read_text().strip()


def built(home: Path, version: str) -> tuple[Path, dict[str, Any]]:
    bento = home / "bentos" / "dlops" / version
    return bento, yaml.safe_load((bento / "bento.yaml").read_text())


def assert_pins(bento: Path, manifest: dict[str, Any], pinned: list[str]) -> None:
    """The Bento packs exactly ``pinned`` and its image serves them with no setting at run time:
    the service's DLOPS_MODELS becomes an ENV of the Dockerfile that containerize builds."""
    (service,) = manifest["services"]
    assert [model["tag"] for model in service["models"]] == pinned
    listed = ",".join(pinned)
    assert manifest["envs"] == [{"name": "DLOPS_MODELS", "value": listed, "stage": "all"}]
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text().splitlines()
    assert f"ARG DLOPS_MODELS={listed}" in dockerfile
    assert "ENV DLOPS_MODELS=$DLOPS_MODELS" in dockerfile
    # No label names one model: which ones are packed is the list above.
    assert manifest["labels"] == {"owner": "dlops", "task": "image-classification"}


def test_bentoml_build_records_the_model_and_the_code(model_home: Path) -> None:
    result = subprocess.run(
        [str(BENTOML), "build", "--output", "tag"],
        cwd=ROOT,
        env=bentoml_env(model_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento, manifest = built(model_home, tag.split(":")[1])
    assert_pins(
        bento,
        manifest,
        [f"binary_classifier_3:{stored_version(model_home, 'binary_classifier_3')}"],
    )
    assert manifest["schema"]["routes"][0]["route"] == "/predict"
    packed = {
        path.relative_to(bento / "src").as_posix()
        for path in (bento / "src").rglob("*")
        if path.is_file()
    }
    assert {
        "service.py",
        "dlops/config.py",
        "dlops/model/store.py",
        "dlops/serving/models.py",
        "dlops/pipeline/decode.py",
        "dlops/pipeline/preprocess/digit.py",
        "dlops/http/upload.py",
        "dlops/api/v2/routes.py",
    } <= packed
    assert {"dlops/api/static/index.html", "dlops/api/static/app.js"} <= packed  # the /ui page
    assert not any(
        path.startswith(("tests/", "training/", "bench/", "deploy/", "models/", ".git"))
        for path in packed
    )
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==1.4.40" in requirements


@pytest.mark.parametrize(
    ("setting", "packed"),
    [
        ({"DLOPS_MODELS": ",".join(TWO_MODELS)}, TWO_MODELS),
        # The case: one model of your own, and an image that must serve it.
        ({"DLOPS_MODEL_NAME": "orientation"}, ("orientation",)),
    ],
    ids=["two-models", "one-model-not-the-default"],
)
def test_make_build_imports_and_packs_every_model_it_serves(
    tmp_path: Path, setting: dict[str, str], packed: tuple[str, ...]
) -> None:
    """On an empty store: `make build` imports this repository's models that it is told to
    serve, and the Bento packs all of them, in order, at the versions it found."""
    home = tmp_path / "bentoml_home"
    result = subprocess.run(
        ["make", "build"],
        cwd=ROOT,
        env=bentoml_env(home, **setting),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bento, manifest = built(home, (home / "bentos" / "dlops" / "latest").read_text().strip())
    assert_pins(bento, manifest, [f"{name}:{stored_version(home, name)}" for name in packed])
