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
# The one variable without a default (Grafana's admin password).
REQUIRED = {"GRAFANA_ADMIN_PASSWORD": "a-test-password"}


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
    assert resolved["services"]["service"]["image"] == "example/housing:1.2.3"


def test_stack_services(stack: dict) -> None:
    assert set(stack["services"]) == {"service", "mlflow", "prometheus", "grafana"}
    assert stack["services"]["service"]["image"] == "housing-price-service:latest"  # docs/ci-cd.md tags it so


def test_health_checks(stack: dict, bento: Path) -> None:
    """Each service but ours declares one; ours comes with the image, so it travels to any runtime."""
    for name in ("mlflow", "prometheus", "grafana"):
        assert stack["services"][name]["healthcheck"]["test"][0] == "CMD", name
    assert "healthcheck" not in stack["services"]["service"]
    assert "\nHEALTHCHECK " in (bento / "env" / "docker" / "Dockerfile").read_text()


def test_state_lives_in_named_volumes(stack: dict, bento: Path) -> None:
    envs = {env["name"]: env["value"] for env in yaml.safe_load((bento / "bento.yaml").read_text())["envs"]}
    predictions = mounts(stack, "service", "volume")
    db = Path(envs["HOUSING_PREDICTION_DB"])
    assert predictions == {db.parent.as_posix(): "predictions"}
    assert Path(envs["HOUSING_LOG_DIR"]).is_relative_to(db.parent)
    assert stack["services"]["service"]["environment"]["HOUSING_PREDICTION_DB"] == db.as_posix()
    assert mounts(stack, "mlflow", "volume") == {"/mlflow": "mlflow-data"}
    assert set(stack["volumes"]) == {"predictions", "mlflow-data", "prometheus-data", "grafana-data"}


def test_monitoring_config_is_mounted_from_the_repository(stack: dict) -> None:
    binds = {**mounts(stack, "prometheus", "bind"), **mounts(stack, "grafana", "bind")}
    assert binds == {
        "/etc/prometheus/prometheus.yml": str(MONITORING / "prometheus.yml"),
        "/etc/prometheus/alerts.yml": str(MONITORING / "alerts.yml"),
        "/etc/grafana/provisioning": str(MONITORING / "grafana" / "provisioning"),
        "/var/lib/grafana/dashboards": str(MONITORING / "grafana" / "dashboards"),
    }
    assert all(Path(source).exists() for source in binds.values())


def test_monitoring_addresses_resolve_inside_the_stack(stack: dict) -> None:
    """Prometheus scrapes the service and Grafana queries Prometheus by their compose service names."""
    prometheus = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]  # beside the config, where the stack mounts it
    (target,) = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in stack["services"]
    assert port == "3000"
    datasources = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    url = urlparse(datasources["datasources"][0]["url"])
    assert url.hostname in stack["services"]
    assert url.port == 9090
    dashboards = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "housing.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] in mounts(stack, "grafana", "bind")


@pytest.mark.parametrize("password", [None, ""], ids=["unset", "empty"])
def test_grafana_has_no_default_password(password: str | None) -> None:
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is not installed: `make tools` installs it"
    env = {key: value for key, value in os.environ.items() if key != "GRAFANA_ADMIN_PASSWORD"}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    result = subprocess.run(
        [executable, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_grafana_takes_its_password_from_the_variable(stack: dict) -> None:
    environment = stack["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]


def test_every_port_is_published_on_loopback_only(stack: dict) -> None:
    """Other hosts reach the service through the HTTP edge or a gateway (docs/security.md)."""
    ports = {name: service.get("ports", []) for name, service in stack["services"].items()}
    assert all(ports.values()), ports
    # docker-compose 1 prints host_ip:published:target/protocol
    assert {
        name: [p for p in published if not str(p).startswith("127.0.0.1:")] for name, published in ports.items()
    } == {name: [] for name in ports}


# What a container may use at most; the service has two workers, each with its own copy of the model.
LIMITS = {
    "service": {"mem_limit": "2g", "cpus": 2, "pids_limit": 512},
    "mlflow": {"mem_limit": "1g", "cpus": 1, "pids_limit": 256},
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


def test_the_service_writes_only_to_its_volume_and_tmpfs(stack: dict) -> None:
    """BentoML creates its store folders under BENTOML_HOME (/home/bentoml) at start, and its metrics folder;
    `bentoml serve` keeps worker sockets in /tmp; everything else is read-only (docs/security.md)."""
    tmpfs = {entry.split(":")[0] for entry in stack["services"]["service"]["tmpfs"]}
    home = ("bentos", "models", "envs", "tmp", "prometheus_multiproc_dir")
    assert tmpfs == {f"/home/bentoml/{folder}" for folder in home} | {"/tmp"}
    assert set(mounts(stack, "service", "volume")) == {"/home/bentoml/var"}
    # Every tmpfs has a size: it counts against the container's memory.
    assert all("size=" in entry for service in stack["services"].values() for entry in service.get("tmpfs", []))
