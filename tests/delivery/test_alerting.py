"""monitoring/alertmanager.yml: the drift and accuracy alerts reach the retraining trigger through a webhook."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from service.admin import admin
from tests.workspace import ROOT

MONITORING = ROOT / "monitoring"
CONFIG = MONITORING / "alertmanager.yml"
RETRAIN_ALERTS = {"HousingDriftDetected", "HousingAccuracyDegraded"}


@pytest.mark.integration  # a system tool
def test_amtool_accepts_the_config() -> None:
    """Checked with Debian's amtool (package prometheus-alertmanager) where it is installed."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed: `apt-get install prometheus-alertmanager` provides it")
    result = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def routed_to(receiver: str, alertname: str) -> bool:
    """Whether Alertmanager's routing tree sends an alert of that name to ``receiver`` (regex matchers only)."""
    route = yaml.safe_load(CONFIG.read_text())["route"]
    for child in route.get("routes", []):
        (matcher,) = child["matchers"]
        label, pattern = matcher.split("=~")
        assert label == "alertname"
        if re.fullmatch(pattern.strip('"'), alertname):
            return bool(child["receiver"] == receiver)
    return bool(route["receiver"] == receiver)


def test_drift_and_accuracy_alerts_go_to_the_retraining_webhook() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts >= RETRAIN_ALERTS
    assert {name for name in alerts if routed_to("retrain", name)} == RETRAIN_ALERTS
    (receiver,) = [r for r in yaml.safe_load(CONFIG.read_text())["receivers"] if r["name"] == "retrain"]
    (webhook,) = receiver["webhook_configs"]
    url = urlparse(webhook["url"])
    # The operations instance of the compose stack, on the route service/admin.py serves for Alertmanager.
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert url.hostname in compose["services"]
    assert url.path in {route.path for route in admin.routes}  # type: ignore[attr-defined]
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    token_file = webhook["http_config"]["authorization"]["credentials_file"]
    assert token_file == f"/run/secrets/{next(iter(compose['services']['alertmanager']['secrets']))}"
    assert webhook["send_resolved"] is False
