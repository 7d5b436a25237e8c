"""The image `make image` builds, run the way Heroku and OpenShift-style platforms run it.

It is built with the real `bentoml containerize` (backend podman) from an empty model store, with
two models of which the first, the one /predict answers, is not the default model; and it is run
with nothing but $PORT set (no model setting: the image serves what it packs), an arbitrary UID
that has no passwd entry, a read-only root filesystem and a tmpfs on /tmp; then it is asked over
HTTP to classify real digits and rendered document pages. This takes minutes, so it runs only when
DLOPS_CONTAINER_TESTS=1 (CI sets it). On a machine without a registry, `deploy/ci/setup-podman.sh`
installs podman and a local stand-in for the base image first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES, ROOT, bentoml_env, free_port
from tests.documents import EXPECTED_LABEL, document

SWITCH = "DLOPS_CONTAINER_TESTS"
pytestmark = pytest.mark.skipif(
    os.environ.get(SWITCH) != "1",
    reason=(
        f"builds and runs the image with podman (minutes): set {SWITCH}=1 to run it, after "
        "`bash deploy/ci/setup-podman.sh` and the `export CONTAINERS_CONF=...` it prints"
    ),
)

IMAGE = "dlops:latest"
# What the image packs and serves, in order: `make image MODELS=...` imports both first.
PACKED = ("orientation", "binary_classifier_3")
DIGIT_MODEL = "binary_classifier_3"
CONTAINER_PORT = 8080  # not the image's default 3000, so a 200 proves $PORT is honoured
RUN_AS = "4242:0"  # a UID with no passwd entry and group 0, as OpenShift assigns them
# The size podman reports, in its MB: 379 before HEIC support, 408 with it (pillow-heif's libheif
# links the x265 encoder, 23 MB, though dlops only decodes); 414 with the orientation model
# (6.8 MB) packed beside the digit one.
MAX_IMAGE_BYTES = 430 * 1000 * 1000
READY_TIMEOUT_SECONDS = 60  # Heroku stops a web dyno that has not bound $PORT within 60 s
DIGITS = FIXTURES / "digits"


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Shows a measured figure in the test run's output, also when the test passes."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[container] {line}")


@pytest.fixture(scope="module")
def image_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's BentoML home: empty until `make image` imports the models into it."""
    return tmp_path_factory.mktemp("image_home")


@pytest.fixture(scope="module")
def image(
    image_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> str:
    """`make image MODELS=...` with the podman backend, into its own model store."""
    assert shutil.which("podman"), f"{SWITCH}=1 needs podman: run deploy/ci/setup-podman.sh"
    log = tmp_path_factory.mktemp("image") / "make-image.log"
    started = time.monotonic()
    with log.open("w") as output:
        built = subprocess.run(
            ["make", "image", "BENTOML_CONTAINERIZE_BACKEND=podman", f"MODELS={','.join(PACKED)}"],
            cwd=ROOT,
            env=bentoml_env(image_home),
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=1200,
            check=False,
        )
    assert built.returncode == 0, f"make image failed:\n{log.read_text()[-6000:]}"
    report(request, f"make image (podman): {time.monotonic() - started:.0f} s")
    return IMAGE


@dataclass
class Container:
    name: str
    url: str
    ready_seconds: float

    def logs(self) -> str:
        result = podman("logs", self.name)
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def container(image: str, request: pytest.FixtureRequest) -> Iterator[Container]:
    """The image run as a platform runs it: $PORT is its only setting."""
    name = f"dlops-test-{uuid.uuid4().hex[:8]}"
    host_port = free_port()
    url = f"http://127.0.0.1:{host_port}"
    started = time.monotonic()
    run = podman(
        "run", "--detach", "--name", name,
        "-e", f"PORT={CONTAINER_PORT}", "--user", RUN_AS,
        "--read-only", "--tmpfs", "/tmp",
        "-p", f"127.0.0.1:{host_port}:{CONTAINER_PORT}",
        image,
    )  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        ready_seconds = wait_ready(name, url, started)
        report(request, f"podman run -> /readyz 200: {ready_seconds:.1f} s")
        yield Container(name, url, ready_seconds)
    finally:
        podman("rm", "--force", "--time", "5", name)


def wait_ready(name: str, url: str, started: float) -> float:
    deadline = started + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state not in ("created", "running"):
            break
        time.sleep(0.2)
    logs = podman("logs", name)
    pytest.fail(
        f"{name} was not ready within {READY_TIMEOUT_SECONDS} s:\n{logs.stdout}{logs.stderr}"
    )


def digit(label: int) -> Path:
    return sorted(DIGITS.glob(f"test*_digit{label}.png"))[0]


def classify_digit(container: Container, label: int) -> httpx.Response:
    """The digit model's answer, at its own route: /predict is the orientation model's."""
    with digit(label).open("rb") as image:
        return httpx.post(
            f"{container.url}/models/{DIGIT_MODEL}/predict", files={"file": image}, timeout=60
        )


def pinned(image_home: Path) -> list[str]:
    """Each packed model as `name:version`, at the version `make image` imported."""
    return [
        f"{name}:{(image_home / 'models' / name / 'latest').read_text().strip()}" for name in PACKED
    ]


def test_image_is_lean_non_root_and_tagged_with_the_bento_version(
    image: str, image_home: Path, request: pytest.FixtureRequest
) -> None:
    inspected = podman("image", "inspect", image)
    assert inspected.returncode == 0, inspected.stderr
    (config,) = json.loads(inspected.stdout)
    size = int(config["Size"])
    report(request, f"image size: {size / 1e6:.0f} MB ({size / 2**20:.0f} MiB)")
    assert size < MAX_IMAGE_BYTES
    user = config["Config"].get("User", "")
    assert user and user.split(":")[0] not in ("0", "root")
    version = (image_home / "bentos" / "dlops" / "latest").read_text().strip()
    by_version = podman("image", "inspect", "--format", "{{.Id}}", f"dlops:{version}")
    assert by_version.stdout.strip() == config["Id"]


def test_image_holds_the_models_and_no_build_tools(image: str, image_home: Path) -> None:
    probe = podman(
        "run", "--rm", "--entrypoint", "sh", image, "-c",
        'cd "$BENTO_PATH"/models && ls */*/model.onnx;'
        " command -v gcc cc g++ make git uv pip || true",
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    found = sorted(probe.stdout.split())
    assert found == sorted(f"{tag.replace(':', '/')}/model.onnx" for tag in pinned(image_home))


def test_the_image_pins_the_models_it_packs(image: str, image_home: Path) -> None:
    """Its DLOPS_MODELS names exactly what it packs, at those versions, the first first."""
    inspected = podman("image", "inspect", "--format", "{{json .Config.Env}}", image)
    env = dict(entry.split("=", 1) for entry in json.loads(inspected.stdout))
    assert env["DLOPS_MODELS"] == ",".join(pinned(image_home))


def test_image_holds_no_secrets(image: str) -> None:
    """No credentials in its environment, and nothing of the checkout but the service."""
    inspected = podman("image", "inspect", "--format", "{{json .Config.Env}}", image)
    names = [entry.split("=", 1)[0] for entry in json.loads(inspected.stdout)]
    assert not [n for n in names if any(w in n for w in ("KEY", "TOKEN", "SECRET", "PASSW"))]
    probe = podman(
        "run", "--rm", "--entrypoint", "sh", image, "-c",
        'cd "$BENTO_PATH" && find . \\( -name .git -o -name .env -o -name .netrc'
        ' -o -name "*.pem" -o -name .venv -o -name tests \\) -print',
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "", probe.stdout


def test_serves_every_packed_model_with_no_setting(container: Container, image_home: Path) -> None:
    """Started with $PORT alone, it serves both models, the first one by default."""
    listing = httpx.get(f"{container.url}/models", timeout=30).json()
    assert listing["default"] == PACKED[0]
    served = [f"{model['name']}:{model['version']}" for model in listing["models"]]
    assert served == pinned(image_home)
    assert {model["state"] for model in listing["models"]} == {"READY"}


def test_predict_answers_with_the_first_packed_model(container: Container) -> None:
    """/predict is the orientation model's: a page turned 90° clockwise is "90"."""
    for rotation in (0, 90):
        files = {"file": ("page.jpg", document(1, rotation, "JPEG"), "image/jpeg")}
        response = httpx.post(f"{container.url}/predict", files=files, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["label"] == EXPECTED_LABEL[rotation]


def test_serves_real_digits_on_port(container: Container) -> None:
    answers = {}
    for label in (3, 0):
        response = classify_digit(container, label)
        assert response.status_code == 200, response.text
        answers[label] = response.json()
    assert answers[3]["label"] == "3" and answers[3]["proba"] > 0.5
    assert answers[0]["label"] == "no 3" and answers[0]["proba"] < 0.5
    logs = container.logs()
    assert f"Overriding $BENTOML_PORT with $PORT ({CONTAINER_PORT})" in logs
    assert "telemetry" not in logs  # onnxruntime's is off (ORT_DISABLE_TELEMETRY in the image)


def test_the_page_and_the_open_inference_protocol_are_in_the_image(container: Container) -> None:
    page = httpx.get(f"{container.url}/ui/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(f"{container.url}/ui/app.js", timeout=30).status_code == 200
    # Behind Heroku's router (TLS ends there) the redirect to the page stays on https: it is
    # relative, so the browser keeps the scheme and host it used (and no Host header is echoed).
    redirect = httpx.get(
        f"{container.url}/ui", headers={"X-Forwarded-Proto": "https", "Host": "evil.example"}
    )
    assert redirect.status_code == 307 and redirect.headers["location"] == "ui/", redirect.headers
    assert httpx.get(f"{container.url}/v2", timeout=30).json()["name"] == "dlops"


def test_a_bad_upload_is_a_4xx_json_error(container: Container) -> None:
    files = {"file": ("notes.txt", b"not an image", "text/plain")}
    response = httpx.post(f"{container.url}/predict", files=files, timeout=30)
    assert response.status_code == 400
    assert "not an image" in response.json()["error"]


def test_the_server_runs_as_the_given_uid_not_root(container: Container) -> None:
    status = podman("exec", container.name, "cat", "/proc/1/status")
    assert status.returncode == 0, status.stderr
    uids = next(line.split()[1:] for line in status.stdout.splitlines() if line.startswith("Uid:"))
    assert uids == [RUN_AS.split(":")[0]] * 4  # real, effective, saved, filesystem
    processes = podman("top", container.name, "huser", "args").stdout
    assert "bentoml serve" in processes and "_bentoml_impl.worker" in processes


def worker_pids(container: Container) -> list[str]:
    top = podman("top", container.name, "pid", "args").stdout.splitlines()[1:]
    return [line.split()[0] for line in top if "_bentoml_impl.worker" in line]


def test_a_killed_worker_is_replaced(container: Container) -> None:
    """Runs last: the image unsets BENTOML_CONTAINERIZED so BentoML respawns workers."""
    (victim,) = worker_pids(container)
    killed = podman("exec", container.name, "sh", "-c", f"kill -9 {victim}")
    assert killed.returncode == 0, killed.stderr
    # Waits in the socket's queue until the new worker takes it (BentoML checks every 10 s).
    response = classify_digit(container, 3)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "3"
    replacement = worker_pids(container)
    assert len(replacement) == 1 and replacement != [victim], container.logs()
