"""deploy/k8s/: every overlay rendered by Kustomize, validated against Kubernetes' API schemas and checkov's policies.

No cluster runs here, so the manifests are held to what can be checked without one: `kubectl kustomize` renders
each overlay, kubernetes-validate checks every document against the schemas of KUBERNETES_VERSION (strict: an
unknown field fails), checkov runs its Kubernetes policies with deploy/k8s/checkov.yaml (every skip there has
its reason), and the promises of the issue are read off the rendered objects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.workspace import BIN, ROOT

# Each test here runs a system tool (kubectl) or checkov in its own venv.
pytestmark = pytest.mark.integration

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production", "dev")
# The version kubectl on these machines speaks (v1.32, Kustomize v5.5); the schemas checked are this release's.
KUBERNETES_VERSION = "1.32.0"
# Custom resources have no schema in Kubernetes' own API: the Prometheus Operator's ServiceMonitor.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
CHECKOV_CONFIG = K8S / "checkov.yaml"


def kubectl() -> str:
    """kubectl is not in Debian's archive: it ships with this machine image and GitHub's Ubuntu runners.

    Elsewhere the rendering tests skip, saying why; in CI (CI=true) a missing kubectl fails instead.
    """
    executable = shutil.which("kubectl")
    if executable is None:
        message = "kubectl is not installed (not packaged by Debian; install it from kubernetes.io)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return executable


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay as `kubectl kustomize` renders it, one file per overlay."""
    executable = kubectl()
    folder = tmp_path_factory.mktemp("k8s-rendered")
    files = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [executable, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{overlay}: {result.stderr}"
        files[overlay] = folder / f"{overlay}.yaml"
        files[overlay].write_text(result.stdout)
    return files


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    (match,) = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return match


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_matches_the_api_schemas(rendered: dict[str, Path], overlay: str) -> None:
    unvalidated = set()
    for doc in documents(rendered[overlay]):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unvalidated.add((doc["apiVersion"], doc["kind"]))
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
    assert unvalidated <= CUSTOM_KINDS


def test_the_validator_refuses_an_unknown_field(rendered: dict[str, Path]) -> None:
    """The strict schema check is not a formality: a misspelt field fails it."""
    deployment = find(documents(rendered["staging"]), "Deployment", "housing-price-service")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def checkov(folder: Path, *args: str) -> dict:
    """checkov's JSON report on every rendered file in ``folder``; checkov lives in its own venv (make checkov)."""
    make = subprocess.run(
        ["make", "-s", "checkov", f"VENV={BIN.parent}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert make.returncode == 0, make.stdout + make.stderr
    result = subprocess.run(
        [str(BIN.parent / "checkov" / "bin" / "checkov"), "-d", str(folder), "--framework", "kubernetes",
         "--compact", "--quiet", "--output", "json", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def configured_skips() -> list[str]:
    return yaml.safe_load(CHECKOV_CONFIG.read_text())["skip-check"]


def test_checkov_passes_with_only_the_justified_skips(rendered: dict[str, Path]) -> None:
    folder = next(iter(rendered.values())).parent
    with_config = checkov(folder, "--config-file", str(CHECKOV_CONFIG))
    summary = with_config["summary"]
    assert summary["failed"] == 0, [
        (check["check_id"], check["resource"]) for check in with_config["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= 40  # every overlay's objects were read
    # Without the skips, exactly the skipped checks fail: none is stale, none hides another finding.
    without = checkov(folder)
    failing = {check["check_id"] for check in without["results"]["failed_checks"]}
    assert failing == set(configured_skips())


def test_every_skip_has_its_reason() -> None:
    lines = CHECKOV_CONFIG.read_text().splitlines()
    for check in configured_skips():
        (index,) = [i for i, line in enumerate(lines) if line.strip() == f"- {check}"]
        assert lines[index - 1].strip().startswith("#"), f"{check} has no reason above it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_rolls_out_without_dropping_requests(rendered: dict[str, Path], overlay: str) -> None:
    docs = documents(rendered[overlay])
    deployment = find(docs, "Deployment", "housing-price-service")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The health paths the service has (BentoML's /livez and /readyz; /readyz answers 503 until the model serves).
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    service_timeout_s = 30  # traffic.timeout in service/service.py
    assert pod["terminationGracePeriodSeconds"] > pause + service_timeout_s
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(container["resources"]["limits"])


def writable_paths() -> set[str]:
    """The service's tmpfs and volume targets in deploy/docker-compose.yml, proven with podman."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    replica = compose["services"]["service-1"]
    volumes = {volume.split(":")[1] for volume in replica["volumes"]}
    return {entry.split(":")[0] for entry in replica["tmpfs"]} | volumes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_runs_locked_down_and_writes_where_compose_does(rendered: dict[str, Path], overlay: str) -> None:
    pod = find(documents(rendered[overlay]), "Deployment", "housing-price-service")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == writable_paths()
    assert all("sizeLimit" in volume["emptyDir"] for volume in pod["volumes"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_and_secrets_use_the_stores_variables(rendered: dict[str, Path], overlay: str) -> None:
    docs = documents(rendered[overlay])
    config = find(docs, "ConfigMap", "housing-config")["data"]
    assert config["HOUSING_FOLLOW_CHAMPION"] == "true"
    assert re.fullmatch(r"https?://\S+", config["MLFLOW_TRACKING_URI"])
    assert re.fullmatch(r"https?://\S+", config["MLFLOW_S3_ENDPOINT_URL"])
    # Tokens and credentials come from the Secret only: never in the ConfigMap or written into a manifest.
    secret_names = {"HOUSING_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HOUSING_ADMIN_TOKEN"}
    assert not secret_names & set(config)
    for kind, name in (("Deployment", "housing-price-service"), ("Deployment", "housing-operations")):
        (container,) = find(docs, kind, name)["spec"]["template"]["spec"]["containers"]
        from_secret = {env["name"] for env in container["env"] if "secretKeyRef" in env.get("valueFrom", {})}
        assert secret_names <= from_secret, name
        assert all("value" not in env for env in container["env"])
    secrets = [doc for doc in docs if doc["kind"] == "Secret"]
    # Only the dev overlay generates its (dev) secrets; staging and production expect them in the namespace.
    assert bool(secrets) == (overlay == "dev")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_disruption_and_scraping(rendered: dict[str, Path], overlay: str) -> None:
    docs = documents(rendered[overlay])
    hpa = find(docs, "HorizontalPodAutoscaler", "housing-price-service")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "housing-price-service"
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    deployment = find(docs, "Deployment", "housing-price-service")
    assert deployment["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find(docs, "PodDisruptionBudget", "housing-price-service")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(docs, "Service", "housing-price-service")
    assert service["spec"]["selector"].items() <= labels.items()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    monitors = [doc for doc in docs if doc["kind"] == "ServiceMonitor"]
    if overlay == "production":
        (monitor,) = monitors
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == [service["spec"]["ports"][0]["name"]]
    else:
        assert monitors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retraining_check_runs_on_a_schedule(rendered: dict[str, Path], overlay: str) -> None:
    cronjob = find(documents(rendered[overlay]), "CronJob", "housing-retrain")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["housing", "retrain"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_dev_overlay_runs_the_stores_in_the_cluster(rendered: dict[str, Path]) -> None:
    docs = documents(rendered["dev"])
    assert {"postgres", "seaweedfs", "mlflow"} <= {doc["metadata"]["name"] for doc in docs if doc["kind"] == "Service"}
    config = find(docs, "ConfigMap", "housing-config")["data"]
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert config["MLFLOW_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    for overlay in ("staging", "production"):
        names = {doc["metadata"]["name"] for doc in documents(rendered[overlay])}
        assert not {"postgres", "seaweedfs", "mlflow"} & names, overlay  # users bring their own stores
