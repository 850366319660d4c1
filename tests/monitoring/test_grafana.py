"""The Grafana dashboard and provisioning: every panel's PromQL returns data from a real Prometheus."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.monitoring.conftest import MONITORING, query, wait_for
from tests.service.server import Server

pytestmark = pytest.mark.integration

GRAFANA = MONITORING / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "housing-price-service.json").read_text())
TARGETS = [(panel["title"], target) for panel in DASHBOARD["panels"] for target in panel["targets"]]


def test_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert (source["type"], source["uid"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "housing.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_covers_what_operators_need() -> None:
    titles = " ".join(panel["title"].lower() for panel in DASHBOARD["panels"])
    for topic in ("request rate", "error rate", "latency", "price distribution", "drift", "accuracy", "model version"):
        assert topic in titles, topic
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    assert all(target["datasource"]["uid"] == "prometheus" for _, target in TARGETS)


@pytest.mark.parametrize(("panel", "target"), TARGETS, ids=[f"{p}:{t['refId']}" for p, t in TARGETS])
def test_every_panel_query_returns_data(scraped: tuple[Server, str], panel: str, target: dict) -> None:
    _, url = scraped
    # Grafana fills $__rate_interval in; a minute covers many 1 s scrapes here.
    promql = target["expr"].replace("$__rate_interval", "1m")
    assert wait_for(url, promql, timeout_s=20), panel
    assert query(url, promql)
