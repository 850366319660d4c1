"""Prometheus config and alert rules, checked by promtool and by a real Prometheus scraping a real service."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.monitoring.conftest import MONITORING, wait_for
from tests.service.server import Server

pytestmark = pytest.mark.integration


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
        "housing_interval_coverage >= 0 and housing_interval_coverage <= 1",
        "housing_interval_feedback_houses >= 1",
        "housing_interval_nominal_coverage == 0.9",
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
        "HousingAccuracyDegraded", "HousingIntervalCoverageLow", "HousingNoTraffic", "HousingPredictionLogFailing",
        "HousingPredictionLogUnavailable", "HousingPredictionLogDroppingRows",
    }  # fmt: skip
    assert all(rule["health"] == "ok" for rule in rules.values())
