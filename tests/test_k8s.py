"""deploy/k8s: valid Kubernetes objects whose probes, port and autoscaler fit the real service.

The objects are checked against the Kubernetes OpenAPI schemas that the kubernetes-validate
package ships (strict: an unknown or misspelt field fails), with no cluster and no kubectl. The
probe paths are requested from a real `bentoml serve`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import psutil
import pytest
import yaml

from tests.conftest import ROOT, Server

K8S = ROOT / "deploy" / "k8s"
# The oldest version where the preStop `sleep` action is on by default, and the newest the
# package has schemas for.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# BentoML's liveness routes: they answer while the process runs, whatever the model is doing,
# so a slow model load can never get a pod restarted.
LIVENESS_ROUTES = {"/livez", "/healthz"}
MEBIBYTE = 1024 * 1024
MEMORY_UNITS = {"Ki": 1024, "Mi": MEBIBYTE, "Gi": 1024 * MEBIBYTE}


def load_kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifests() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k deploy/k8s` creates, in the kustomization's order."""
    objects: list[dict[str, Any]] = []
    for resource in load_kustomization()["resources"]:
        objects += [doc for doc in yaml.safe_load_all((K8S / resource).read_text()) if doc]
    return objects


def only(kind: str) -> dict[str, Any]:
    (found,) = [item for item in manifests() if item["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    (found,) = only("Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def env_value(name: str) -> str:
    (value,) = [item["value"] for item in container()["env"] if item["name"] == name]
    return value


def mebibytes(quantity: str) -> float:
    number, unit = quantity[:-2], quantity[-2:]
    return float(number) * MEMORY_UNITS[unit] / MEBIBYTE


def test_the_kustomization_applies_every_manifest_in_the_folder() -> None:
    listed = load_kustomization()["resources"]
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)
    assert {item["kind"] for item in manifests()} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes_in_strict_mode(version: str) -> None:
    for item in manifests():
        kubernetes_validate.validate(item, version, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: a field Kubernetes does not know is an error."""
    deployment = copy.deepcopy(only("Deployment"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0].pop("livenessProbe")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_probes_ask_paths_the_real_service_answers(server: Server) -> None:
    probes = {kind: container()[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    readiness = container()["readinessProbe"]["httpGet"]
    for kind, probe in probes.items():
        assert probe["path"] in LIVENESS_ROUTES, kind
        assert httpx.get(server.url + probe["path"], timeout=5).status_code == 200, kind
    assert readiness["path"] not in LIVENESS_ROUTES
    # The fixture's server is ready (the model is loaded): readiness says so.
    assert httpx.get(server.url + readiness["path"], timeout=5).status_code == 200
    # A path the service does not have is 404, so a wrong probe path cannot pass unseen.
    assert httpx.get(server.url + readiness["path"] + "-not", timeout=5).status_code == 404
    for probe in (*probes.values(), readiness):
        assert probe["port"] == "http"
    # Where the scrape annotation sends Prometheus.
    annotations = only("Deployment")["spec"]["template"]["metadata"]["annotations"]
    metrics = httpx.get(server.url + annotations["prometheus.io/path"], timeout=5)
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text


def test_the_container_port_is_PORT_everywhere() -> None:
    deployment = only("Deployment")
    (port,) = container()["ports"]
    assert port["name"] == "http"
    assert port["containerPort"] == int(env_value("PORT"))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    (service_port,) = only("Service")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]


def test_the_models_are_the_images_own() -> None:
    """The Deployment leaves the models to the image, which serves what it packs (its own
    DLOPS_MODELS, pinned by `make image`); a DLOPS_MODEL_NAME here would be ignored for it."""
    names = {item["name"] for item in container()["env"]}
    assert not names & {"DLOPS_MODELS", "DLOPS_MODEL_NAME"}


def test_the_bentoml_image_serves_on_PORT() -> None:
    """The image's entrypoint (BentoML's own) is what turns PORT into the serving port."""
    import bentoml

    entrypoint = (
        Path(bentoml.__file__).parent / "_internal/container/frontend/dockerfile/entrypoint.sh"
    ).read_text()
    assert "export BENTOML_PORT=$PORT" in entrypoint


def test_the_autoscaler_scales_the_deployment_on_cpu() -> None:
    deployment, autoscaler = only("Deployment"), only("HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilisation is a share of the request: without one the autoscaler cannot compute it.
    assert "cpu" in container()["resources"]["requests"]
    # `kubectl apply` would reset the autoscaler's count to a replicas field on every apply.
    assert "replicas" not in deployment["spec"]
    assert autoscaler["spec"]["minReplicas"] >= 2


def test_every_selector_picks_the_deployments_pods() -> None:
    deployment = only("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": only("Service")["spec"]["selector"],
        "PodDisruptionBudget": only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= pod_labels.items(), kind


def test_the_pod_runs_unprivileged_on_a_read_only_root() -> None:
    pod = only("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # What BentoML writes at run time (BENTOML_HOME) is on a writable volume.
    writable = {
        mount["mountPath"]
        for mount in container()["volumeMounts"]
        if any(
            volume["name"] == mount["name"] and "emptyDir" in volume for volume in pod["volumes"]
        )
    }
    assert any(Path(env_value("BENTOML_HOME")).is_relative_to(path) for path in writable)


def test_the_memory_request_covers_the_real_serving_tree(server: Server) -> None:
    """The scheduler reserves at least what `bentoml serve` with this worker count holds."""
    assert server.process.poll() is None
    tree = psutil.Process(server.process.pid)
    resident = sum(process.memory_info().rss for process in (tree, *tree.children(True)))
    assert env_value("DLOPS_WORKERS") == "1", "the fixture's server runs one worker"
    resources = container()["resources"]
    request = mebibytes(resources["requests"]["memory"])
    assert resident / MEBIBYTE <= request
    assert mebibytes(resources["limits"]["memory"]) > request


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is optional")
def test_kubectl_kustomize_builds_the_same_objects() -> None:
    """Where kubectl is installed, its kustomize gives what the tests above checked."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    rendered = {
        (item["kind"], item["metadata"]["name"]): item for item in yaml.safe_load_all(built)
    }
    expected = {(item["kind"], item["metadata"]["name"]): item for item in manifests()}
    (image,) = load_kustomization()["images"]
    expected_container = expected["Deployment", "dlops"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert expected_container["image"].split(":")[0] == image["name"]
    expected_container["image"] = f"{image['newName']}:{image['newTag']}"
    assert rendered == expected
