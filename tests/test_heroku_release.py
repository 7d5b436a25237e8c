"""`make heroku-release`: the exact commands, tags and failure messages, with recording fakes.

No cloud is reachable from here, so `heroku`, `docker` and `podman` are the fakes in tests/fakes
(they append each call to a log). Everything else is real: make, the script, `bentoml build` and
`bentoml containerize`, which renders the Dockerfile and calls the fake engine to build it. PATH
holds only the fakes a test asks for and the few system tools the script and make use, so that a
missing tool is really missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

FAKES = Path(__file__).resolve().parent / "fakes"
SCRIPT = ROOT / "deploy" / "heroku-release.sh"
APP = "dlops-test"
TARGET = f"registry.heroku.com/{APP}/web"
WEB_URL = f"https://{APP}-0a1b2c3d4e5f.herokuapp.com/"  # what the fake `heroku apps:info` answers
SYSTEM_TOOLS = ("bash", "make", "sed", "mkdir", "dirname", "touch", "env")


@dataclass
class Release:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict]

    def commands(self) -> list[list[str]]:
        """Each recorded call as [tool, *args]."""
        return [[call["tool"], *call["args"]] for call in self.calls]


@pytest.fixture
def release(tmp_path: Path, model_home: Path):
    """Runs the release (through make, or the script itself) with only the given fakes on PATH."""

    def run(*fakes: str, via_make: bool = False, app: str | None = APP, **env: str) -> Release:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        for tool in SYSTEM_TOOLS:
            found = shutil.which(tool)
            assert found, f"{tool} is needed to run the release script"
            (bin_dir / tool).symlink_to(found)
        # The fakes' interpreter: this Python's own binary (a pyenv shim would need pyenv on PATH).
        (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())
        for fake in fakes:
            (bin_dir / fake).symlink_to(FAKES / fake)
        log = tmp_path / "calls.jsonl"
        log.touch()
        environment = {
            "PATH": str(bin_dir),
            "HOME": os.environ.get("HOME", str(tmp_path)),
            "FAKE_LOG": str(log),
            "BENTOML_HOME": str(model_home),
            "BENTOML_DO_NOT_TRACK": "True",
            **env,
        }
        if app is not None:
            environment["HEROKU_APP"] = app
        command = ["make", "heroku-release"] if via_make else ["bash", str(SCRIPT)]
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return Release(result.returncode, result.stdout, result.stderr, calls)

    return run


def build_call(release: Release) -> dict:
    (build,) = [call for call in release.calls if call["args"][:1] == ["build"]]
    return build


def expected_build(release: Release, *platform_options: str) -> list[str]:
    """The build that `make image` has `bentoml containerize` run: both tags, the platform
    options, and the Dockerfile it rendered in its temporary build context."""
    arguments = build_call(release)["args"]
    context = arguments[-1]
    (version,) = {tag.removeprefix("dlops:") for tag in arguments if tag.startswith("dlops:")} - {
        "latest"
    }
    return [
        "build",
        *platform_options,
        "--tag",
        "dlops:latest",
        "--tag",
        f"dlops:{version}",
        "--file",
        f"{context}/env/docker/Dockerfile",
        context,
    ]


def test_release_with_docker_and_buildx(release) -> None:
    done = release("heroku", "docker", via_make=True)

    assert done.returncode == 0, done.stderr
    build = expected_build(done, "--platform", "linux/amd64", "--provenance", "false")
    bentoml_health_check = ["docker", "version", "--format", "{{json .Server.Version}}"]
    assert done.commands() == [
        ["docker", "version", "--format", "{{.Server.Version}}"],
        ["heroku", "auth:whoami"],
        ["docker", "buildx", "version"],
        ["heroku", "auth:token"],
        ["docker", "login", "--username", "_", "--password-stdin", "registry.heroku.com"],
        bentoml_health_check,
        bentoml_health_check,
        ["docker", *build],
        ["docker", "tag", "dlops:latest", TARGET],
        ["docker", "push", TARGET],
        ["heroku", "container:release", "web", "-a", APP],
        ["heroku", "apps:info", "-a", APP, "--shell"],
    ]
    login = done.calls[4]
    assert login["stdin"].strip() == "fake-heroku-api-token"  # the token never appears in argv
    assert build_call(done)["env"]["DOCKER_BUILDKIT"] == "1"
    assert Path(build[-1]).parent == ROOT / "build" / "containerize"
    assert f"Released {TARGET} at {WEB_URL}" in done.stdout
    assert (
        f"curl -F file=@tests/fixtures/digits/test0300_digit3.png {WEB_URL}predict" in done.stdout
    )


def test_release_with_podman_pushes_docker_schema_2(release) -> None:
    done = release("heroku", "podman", via_make=True)

    assert done.returncode == 0, done.stderr
    build = expected_build(done, "--platform", "linux/amd64", "--format", "docker")
    assert done.commands() == [
        ["heroku", "auth:whoami"],
        ["heroku", "auth:token"],
        ["podman", "login", "--username", "_", "--password-stdin", "registry.heroku.com"],
        ["podman", *build],
        ["podman", "tag", "dlops:latest", TARGET],
        ["podman", "push", "--format", "v2s2", TARGET],
        ["heroku", "container:release", "web", "-a", APP],
        ["heroku", "apps:info", "-a", APP, "--shell"],
    ]
    assert done.calls[2]["stdin"].strip() == "fake-heroku-api-token"
    assert f"Released {TARGET} at {WEB_URL}" in done.stdout


def test_the_image_packs_and_pins_the_models_of_MODELS(release, tmp_path: Path) -> None:
    """MODELS picks what the released image serves, with no model setting on the app; this
    repository's models are imported into an empty store first."""
    home = tmp_path / "bentoml_home"
    models = "orientation,binary_classifier_3"
    done = release("heroku", "podman", via_make=True, BENTOML_HOME=str(home), MODELS=models)

    assert done.returncode == 0, done.stderr
    assert (
        f"CONTAINERIZE_OPTS='--opt platform=linux/amd64 --opt format=docker' MODELS='{models}'"
        in done.stdout
    )
    # The Bento that the engine was asked to build packs both and pins them in its Dockerfile.
    version = (home / "bentos" / "dlops" / "latest").read_text().strip()
    assert f"dlops:{version}" in build_call(done)["args"]
    bento = home / "bentos" / "dlops" / version
    pinned = [
        f"{name}:{(home / 'models' / name / 'latest').read_text().strip()}"
        for name in models.split(",")
    ]
    (service,) = yaml.safe_load((bento / "bento.yaml").read_text())["services"]
    assert [model["tag"] for model in service["models"]] == pinned
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text().splitlines()
    assert f"ARG DLOPS_MODELS={','.join(pinned)}" in dockerfile
    assert "ENV DLOPS_MODELS=$DLOPS_MODELS" in dockerfile
    assert f"curl {WEB_URL}models" in done.stdout
    assert f"curl -F file=@image.jpg {WEB_URL}predict   # orientation answers" in done.stdout


def test_docker_without_buildx_builds_with_the_classic_builder(release) -> None:
    done = release("heroku", "docker", FAKE_DOCKER_BUILDX="0")

    assert done.returncode == 0, done.stderr
    assert build_call(done)["args"] == expected_build(done, "--platform", "linux/amd64")
    assert build_call(done)["env"]["DOCKER_BUILDKIT"] == "0"
    assert "+ env DOCKER_BUILDKIT=0 make image BENTOML_CONTAINERIZE_BACKEND=docker" in done.stdout


def test_dry_run_prints_the_commands_and_runs_none(release) -> None:
    done = release("heroku", "podman", DRY_RUN="1")

    assert done.returncode == 0, done.stderr
    assert done.calls == []
    assert done.stdout.splitlines() == [
        "+ heroku auth:whoami",
        "+ heroku auth:token | podman login --username _ --password-stdin registry.heroku.com",
        "+ make image BENTOML_CONTAINERIZE_BACKEND=podman"
        " CONTAINERIZE_OPTS='--opt platform=linux/amd64 --opt format=docker'",
        f"+ podman tag dlops:latest {TARGET}",
        f"+ podman push --format v2s2 {TARGET}",
        f"+ heroku container:release web -a {APP}",
        f"+ heroku apps:info -a {APP} --shell",
        "",
        "Dry run: nothing was run.",
    ]


def test_dry_run_through_make_with_docker(release) -> None:
    done = release("docker", via_make=True, DRY_RUN="1")

    assert done.returncode == 0, done.stderr
    assert done.calls == []
    assert (
        "+ make image BENTOML_CONTAINERIZE_BACKEND=docker"
        " CONTAINERIZE_OPTS='--opt platform=linux/amd64 --opt provenance=false'"
    ) in done.stdout
    assert f"+ docker push {TARGET}" in done.stdout


@pytest.mark.parametrize(
    ("fakes", "env", "message"),
    [
        (("docker",), {}, "the Heroku CLI (heroku) is not installed or not on PATH"),
        (("heroku",), {}, "neither docker nor podman is installed or on PATH"),
        (
            ("heroku", "docker"),
            {"BENTOML_CONTAINERIZE_BACKEND": "podman"},
            "podman is not installed or not on PATH (BENTOML_CONTAINERIZE_BACKEND=podman)",
        ),
        (
            ("heroku", "docker"),
            {"FAKE_DOCKER_DAEMON": "0"},
            "docker is installed but its daemon does not answer",
        ),
        (
            ("heroku", "docker"),
            {"FAKE_HEROKU_LOGGED_IN": "0"},
            "the Heroku CLI is not logged in: run heroku login",
        ),
        (
            ("heroku", "podman"),
            {"FAKE_REGISTRY_LOGIN": "0"},
            "podman could not log in to registry.heroku.com with the Heroku CLI's token",
        ),
    ],
    ids=[
        "no-heroku",
        "no-engine",
        "no-podman",
        "docker-daemon-down",
        "not-logged-in",
        "login-refused",
    ],
)
def test_a_missing_tool_or_login_stops_before_anything_is_built(
    release, fakes: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    done = release(*fakes, **env)

    assert done.returncode == 1
    assert f"heroku-release: {message}" in done.stderr
    ran = {(call["tool"], call["args"][0]) for call in done.calls}
    assert not ran & {
        ("docker", "build"),
        ("podman", "build"),
        ("docker", "push"),
        ("podman", "push"),
        ("heroku", "container:release"),
    }


def test_the_app_name_is_required(release) -> None:
    done = release("heroku", "docker", app=None)

    assert done.returncode == 1
    assert "set HEROKU_APP to the app's name: make heroku-release HEROKU_APP=<name>" in done.stderr
    assert done.calls == []
