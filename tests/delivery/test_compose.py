"""deploy/docker-compose.yml, validated by Debian's docker-compose and checked against what it mounts and runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.delivery.tools import validate
from tests.workspace import ROOT

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
MONITORING = ROOT / "monitoring"


@pytest.fixture(scope="module")
def stack() -> dict:
    """The file as docker-compose resolves it: defaults filled in, bind-mount sources made absolute."""
    validate("docker-compose", "-f", str(COMPOSE), "config", "-q")
    return yaml.safe_load(validate("docker-compose", "-f", str(COMPOSE), "config"))


def mounts(stack: dict, service: str, kind: str) -> dict[str, str]:
    """Target -> source of a service's "bind" or named "volume" mounts (docker-compose 1 prints source:target:mode)."""
    pairs = (volume.split(":")[:2] for volume in stack["services"][service]["volumes"])
    return {target: source for source, target in pairs if source.startswith("/") == (kind == "bind")}


def test_image_is_overridable() -> None:
    resolved = yaml.safe_load(
        validate("docker-compose", "-f", str(COMPOSE), "config", env={"HOUSING_IMAGE": "example/housing:1.2.3"})
    )
    assert resolved["services"]["service"]["image"] == "example/housing:1.2.3"


def test_stack_services(stack: dict) -> None:
    assert set(stack["services"]) == {"service", "mlflow", "prometheus", "grafana"}
    assert stack["services"]["service"]["image"] == "housing-price-service:latest"  # docs/ci-cd.md tags it so


@pytest.mark.integration  # needs the session's bento
def test_health_checks(stack: dict, bento: Path) -> None:
    """Each service but ours declares one; ours comes with the image, so it travels to any runtime."""
    for name in ("mlflow", "prometheus", "grafana"):
        assert stack["services"][name]["healthcheck"]["test"][0] == "CMD", name
    assert "healthcheck" not in stack["services"]["service"]
    assert "\nHEALTHCHECK " in (bento / "env" / "docker" / "Dockerfile").read_text()


@pytest.mark.integration  # needs the session's bento
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
