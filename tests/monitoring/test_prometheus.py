"""Prometheus config and alert rules, checked by promtool and by a real Prometheus scraping a real service."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from service.schemas import EXAMPLE_HOUSE
from tests.service.server import Server, free_port, start_server
from tests.workspace import ROOT

pytestmark = pytest.mark.integration

MONITORING = ROOT / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_config_and_rules() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, workspace) -> Iterator[tuple[Server, str]]:
    """A service with traffic, and a Prometheus scraping it every second with the project's rules."""
    root = tmp_path_factory.mktemp("prometheus")
    server = start_server(root / "service")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [server.url.removeprefix("http://")]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(root / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        drive_traffic(server.url)
        wait_for(url, 'up{job="housing-price-service"} == 1')
        wait_for(url, "housing_accuracy_usd")
        yield server, url
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        server.stop()


def drive_traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            client.post("/predict", json=EXAMPLE_HOUSE)
        priced = client.post("/predict_batch", json=[EXAMPLE_HOUSE] * 10).json()
        client.post("/predict", json={**EXAMPLE_HOUSE, "latitude": 99.0})
        client.post("/feedback", json={"request_id": priced["request_id"], "actual_price_usd": 300_000.0})
        # Feedback reaches the log asynchronously; /accuracy publishes the gauges once it is there.
        deadline = time.monotonic() + 10
        while not client.get("/accuracy").json()["accuracy"]:
            assert time.monotonic() < deadline, "feedback never reached the log"
            time.sleep(0.1)


def query(url: str, promql: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert response["status"] == "success", response
    return response["data"]["result"]


def wait_for(url: str, promql: str, timeout_s: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := query(url, promql):
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no data for {promql!r} after {timeout_s} s")


@pytest.mark.parametrize(
    "promql",
    [
        'housing_request_total{endpoint="/predict",http_response_code="200"}',
        'housing_request_total{endpoint="/predict",http_response_code="400"}',
        "housing_request_duration_seconds_bucket",
        'sum by (endpoint) (housing_predictions_total{endpoint="predict"}) >= 20',
        'housing_batch_size_bucket{endpoint="predict_batch",le="10.0"} >= 1',
        "housing_predicted_price_usd_count >= 30",
        'housing_validation_failures_total{endpoint="/predict",field="latitude"} >= 1',
        "housing_prediction_log_queue",
        "housing_prediction_log_write_failures_total == 0",
        'housing_model_info{model_name="housing-price-model"} == 1',
        'housing_accuracy_usd{metric="rmse"} > 0',
        "housing_feedback_houses >= 1",
    ],
)
def test_prometheus_scrapes_the_service(scraped: tuple[Server, str], promql: str) -> None:
    _, url = scraped
    assert wait_for(url, promql, timeout_s=15)


def test_prometheus_loads_the_alert_rules(scraped: tuple[Server, str]) -> None:
    _, url = scraped
    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {
        "HousingHighErrorRate", "HousingHighLatencyP99", "HousingDriftDetected",
        "HousingAccuracyDegraded", "HousingNoTraffic", "HousingPredictionLogFailing",
    }  # fmt: skip
    assert all(rule["health"] == "ok" for rule in rules.values())
