"""POST /admin/retrain/alert: Alertmanager's webhook, as Alertmanager sends it, reaches the retraining trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from housing.jobs import job_lock
from housing.settings import settings
from tests.service.conftest import ADMIN

PATH = "/admin/retrain/alert"


def notification(*statuses: str, alertname: str = "HousingDriftDetected") -> dict[str, Any]:
    """A webhook body of Alertmanager 0.25+ (version 4), every field it sends."""
    alerts = [
        {
            "status": status,
            "labels": {"alertname": alertname, "severity": "ticket"},
            "annotations": {"summary": "Input drift against the training data"},
            "startsAt": "2026-11-30T01:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=max%28housing_drift_detected%29+%3D%3D+1",
            "fingerprint": f"{index:016x}",
        }
        for index, status in enumerate(statuses)
    ]
    return {
        "version": "4",
        "groupKey": '{}/{alertname=~"HousingDriftDetected|HousingAccuracyDegraded"}:{alertname="' + alertname + '"}',
        "truncatedAlerts": 0,
        "status": "firing" if "firing" in statuses else "resolved",
        "receiver": "retrain",
        "groupLabels": {"alertname": alertname},
        "commonLabels": {"alertname": alertname, "severity": "ticket"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


def test_the_webhook_needs_the_admin_token(client: TestClient) -> None:
    assert client.post(PATH, json=notification("firing")).status_code == 401
    assert client.post(PATH, json=notification("firing"), headers={"Authorization": "Bearer no"}).status_code == 403


def test_a_resolved_alert_starts_nothing(client: TestClient) -> None:
    response = client.post(PATH, json=notification("resolved"), headers=ADMIN)
    assert response.status_code == 202
    assert response.json() == {"state": "ignored", "reason": "no firing alert"}


def test_a_firing_alert_during_a_retraining_is_answered_by_it(client: TestClient) -> None:
    with job_lock(settings().prediction_db.parent):
        response = client.post(PATH, json=notification("firing", "resolved"), headers=ADMIN)
    assert response.status_code == 202, response.text
    assert response.json() == {"state": "running", "alerts": ["HousingDriftDetected"], "status": "/admin/retrain"}


def test_a_firing_alert_reaches_the_same_trigger_as_post_admin_retrain(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a DVC project the trigger refuses as POST /admin/retrain does: the alert took the same path."""
    monkeypatch.setenv("HOUSING_PROJECT_DIR", str(tmp_path))
    settings.cache_clear()
    try:
        from_alert = client.post(PATH, json=notification("firing"), headers=ADMIN)
        direct = client.post("/admin/retrain", headers=ADMIN)
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert from_alert.status_code == direct.status_code == 503
    assert from_alert.json() == direct.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**notification("firing"), "version": "3"}, "version"),
        ({**notification("firing"), "alerts": [{"status": "pending"}]}, "alerts.0.status"),
        ({"force": True}, "version"),
    ],
)
def test_other_bodies_are_4xx_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post(PATH, json=body, headers=ADMIN)
    assert response.status_code == 422
    assert field in {".".join(str(part) for part in error["loc"][1:]) for error in response.json()["detail"]}
