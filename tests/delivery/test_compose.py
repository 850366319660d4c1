"""deploy/docker-compose.yml, validated by Debian's docker-compose and checked against what it mounts and runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.delivery.tools import validate
from tests.workspace import ROOT

# Every test here runs Debian's docker-compose, a system tool.
pytestmark = pytest.mark.integration

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
MONITORING = ROOT / "monitoring"
# The variables without a default: the secrets.
REQUIRED = {
    "GRAFANA_ADMIN_PASSWORD": "a-test-password",
    "POSTGRES_PASSWORD": "a-test-db-password",
    "HOUSING_ADMIN_TOKEN": "a-test-admin-token",
    "HOUSING_ADMIN_TOKEN_FILE": str(Path(__file__)),  # any existing file will do for `config`
}
REPLICAS = ("service-1", "service-2")


@pytest.fixture(scope="module")
def stack() -> dict:
    """The file as docker-compose resolves it: defaults filled in, bind-mount sources made absolute."""
    validate("docker-compose", "-f", str(COMPOSE), "config", "-q", env=REQUIRED)
    return yaml.safe_load(validate("docker-compose", "-f", str(COMPOSE), "config", env=REQUIRED))


def mounts(stack: dict, service: str, kind: str) -> dict[str, str]:
    """Target -> source of a service's "bind" or named "volume" mounts (docker-compose 1 prints source:target:mode)."""
    pairs = (volume.split(":")[:2] for volume in stack["services"][service]["volumes"])
    return {target: source for source, target in pairs if source.startswith("/") == (kind == "bind")}


def test_image_is_overridable() -> None:
    resolved = yaml.safe_load(
        validate(
            "docker-compose", "-f", str(COMPOSE), "config", env={**REQUIRED, "HOUSING_IMAGE": "example/housing:1.2.3"}
        )
    )
    assert {resolved["services"][name]["image"] for name in REPLICAS} == {"example/housing:1.2.3"}


OURS = (*REPLICAS, "operations")  # the service's image (and the operations image built from it)
STORES = ("postgres", "s3", "mlflow")
MONITORING_SERVICES = ("prometheus", "alertmanager", "grafana")


def test_stack_services(stack: dict) -> None:
    assert set(stack["services"]) == {*OURS, "proxy", *STORES, *MONITORING_SERVICES}
    for name in REPLICAS:  # docs/ci-cd.md tags it so
        assert stack["services"][name]["image"] == "housing-price-service:latest"


def test_health_checks(stack: dict, bento: Path) -> None:
    """Each service but ours declares one; ours comes with the image, so it travels to any runtime."""
    for name in ("proxy", *STORES, *MONITORING_SERVICES):
        assert stack["services"][name]["healthcheck"]["test"][0] == "CMD", name
    assert not [name for name in OURS if "healthcheck" in stack["services"][name]]
    assert "\nHEALTHCHECK " in (bento / "env" / "docker" / "Dockerfile").read_text()


def test_two_replicas_share_the_stores_behind_the_proxy(stack: dict) -> None:
    """Both replicas write one prediction log (PostgreSQL) and follow one registry; the proxy checks each."""
    environments = [stack["services"][name]["environment"] for name in REPLICAS]
    assert environments[0] == environments[1]
    environment = environments[0]
    assert environment["HOUSING_DATABASE_URL"] == (
        f"postgresql://housing:{REQUIRED['POSTGRES_PASSWORD']}@postgres:5432/housing"
    )
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert environment["HOUSING_FOLLOW_CHAMPION"] == "true"
    assert "HOUSING_ADMIN_TOKEN" not in environment  # the replicas have no admin role; operations has
    proxy = stack["services"]["proxy"]
    assert {proxy["environment"]["REPLICA_1"], proxy["environment"]["REPLICA_2"]} == {f"{n}:3000" for n in REPLICAS}
    for name in REPLICAS:
        assert "ports" not in stack["services"][name]  # clients reach them through the proxy only
    mlflow = " ".join(stack["services"]["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow
    assert "--artifacts-destination=s3://" in mlflow


def test_state_lives_in_named_volumes(stack: dict, bento: Path) -> None:
    envs = {env["name"]: env["value"] for env in yaml.safe_load((bento / "bento.yaml").read_text())["envs"]}
    db = Path(envs["HOUSING_PREDICTION_DB"])
    assert Path(envs["HOUSING_LOG_DIR"]).is_relative_to(db.parent)
    for index, name in enumerate(REPLICAS, start=1):  # each replica's request logs and dead-letter file
        assert mounts(stack, name, "volume") == {db.parent.as_posix(): f"replica-{index}"}
        assert stack["services"][name]["environment"]["HOUSING_PREDICTION_DB"] == db.as_posix()
    assert mounts(stack, "postgres", "volume") == {"/var/lib/postgresql/data": "postgres-data"}
    assert mounts(stack, "s3", "volume") == {"/data": "s3-data"}
    assert set(stack["volumes"]) == {
        "replica-1", "replica-2", "operations", "postgres-data", "s3-data", "prometheus-data", "alertmanager-data",
        "grafana-data",
    }  # fmt: skip


def test_monitoring_config_is_mounted_from_the_repository(stack: dict) -> None:
    binds = {name: source for service in MONITORING_SERVICES for name, source in mounts(stack, service, "bind").items()}
    assert binds == {
        "/etc/prometheus/prometheus.yml": str(MONITORING / "prometheus.yml"),
        "/etc/prometheus/alerts.yml": str(MONITORING / "alerts.yml"),
        "/etc/alertmanager/alertmanager.yml": str(MONITORING / "alertmanager.yml"),
        "/etc/grafana/provisioning": str(MONITORING / "grafana" / "provisioning"),
        "/var/lib/grafana/dashboards": str(MONITORING / "grafana" / "dashboards"),
    }
    assert all(Path(source).exists() for source in binds.values())


def test_monitoring_addresses_resolve_inside_the_stack(stack: dict) -> None:
    """Prometheus scrapes each replica and the proxy, and Grafana queries Prometheus, by compose service names."""
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]  # beside the config, where the stack mounts it
    targets = [target for job in prometheus["scrape_configs"] for target in job["static_configs"][0]["targets"]]
    assert targets == ["service-1:3000", "service-2:3000", "proxy:8405"]
    assert stack["services"]["proxy"]["environment"]["PROXY_STATS_BIND"] == ":8405"
    (alertmanager,) = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == "alertmanager:9093"
    assert all(target.split(":")[0] in stack["services"] for target in [*targets, alertmanager])
    datasources = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    url = urlparse(datasources["datasources"][0]["url"])
    assert url.hostname in stack["services"]
    assert url.port == 9090
    dashboards = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "housing.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] in mounts(stack, "grafana", "bind")


@pytest.mark.parametrize("password", [None, ""], ids=["unset", "empty"])
@pytest.mark.parametrize("secret", sorted(REQUIRED))
def test_no_secret_has_a_default(secret: str, password: str | None) -> None:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is not installed: `make tools` installs it"
    env = {key: value for key, value in {**os.environ, **REQUIRED}.items() if key != secret}
    if password is not None:
        env[secret] = password
    result = subprocess.run(
        [executable, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert f"set {secret}" in result.stderr


def test_grafana_takes_its_password_from_the_variable(stack: dict) -> None:
    environment = stack["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]


def test_every_port_is_published_on_loopback_only(stack: dict) -> None:
    """Other hosts reach the service through the HTTP edge or a gateway (docs/security.md)."""
    ports = {name: service.get("ports", []) for name, service in stack["services"].items()}
    assert {name for name, published in ports.items() if not published} == set(OURS)  # reached through others
    # docker-compose 1 prints host_ip:published:target/protocol
    assert {
        name: [p for p in published if not str(p).startswith("127.0.0.1:")] for name, published in ports.items()
    } == {name: [] for name in ports}


# What a container may use at most; the service has two workers, each with its own copy of the model.
LIMITS = {
    "service-1": {"mem_limit": "2g", "cpus": 2, "pids_limit": 512},
    "service-2": {"mem_limit": "2g", "cpus": 2, "pids_limit": 512},
    "operations": {"mem_limit": "4g", "cpus": 2, "pids_limit": 512},  # it trains four model families
    "proxy": {"mem_limit": "256m", "cpus": 1, "pids_limit": 128},
    "postgres": {"mem_limit": "1g", "cpus": 1, "pids_limit": 256},
    "s3": {"mem_limit": "1g", "cpus": 1, "pids_limit": 256},
    "mlflow": {"mem_limit": "1g", "cpus": 1, "pids_limit": 256},
    "alertmanager": {"mem_limit": "256m", "cpus": 1, "pids_limit": 128},
    "prometheus": {"mem_limit": "1g", "cpus": 1, "pids_limit": 256},
    "grafana": {"mem_limit": "512m", "cpus": 1, "pids_limit": 256},
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_every_container_is_locked_down(stack: dict, name: str) -> None:
    assert set(LIMITS) == set(stack["services"])
    service = stack["services"][name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert "privileged" not in service
    assert {key: service.get(key) for key in LIMITS[name]} == LIMITS[name]


@pytest.mark.parametrize("name", REPLICAS)
def test_the_service_writes_only_to_its_volume_and_tmpfs(stack: dict, name: str) -> None:
    """BentoML creates its store folders under BENTOML_HOME (/home/bentoml) at start, and its metrics folder;
    `bentoml serve` keeps worker sockets in /tmp; everything else is read-only (docs/security.md)."""
    tmpfs = {entry.split(":")[0] for entry in stack["services"][name]["tmpfs"]}
    home = ("bentos", "models", "envs", "tmp", "prometheus_multiproc_dir")
    assert tmpfs == {f"/home/bentoml/{folder}" for folder in home} | {"/tmp"}
    assert set(mounts(stack, name, "volume")) == {"/home/bentoml/var"}
    # Every tmpfs has a size: it counts against the container's memory.
    assert all("size=" in entry for service in stack["services"].values() for entry in service.get("tmpfs", []))
