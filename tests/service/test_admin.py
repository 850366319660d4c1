"""Admin endpoints in process: the token, reload, the retraining lock, rollback refusals, history."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from housing.jobs import job_lock
from housing.settings import settings
from service.admin import warm_registry_client
from tests.service.conftest import ADMIN
from tests.workspace import ROOT

ADMIN_CALLS = [("POST", "/admin/reload"), ("POST", "/admin/retrain"), ("GET", "/admin/retrain"),
               ("POST", "/admin/rollback")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_admin_needs_the_token(client: TestClient, method: str, path: str) -> None:
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert client.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401
    wrong = client.request(method, path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403
    assert wrong.json()["detail"] == "authorization: wrong admin token"


def test_admin_is_disabled_without_a_configured_token(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOUSING_ADMIN_TOKEN")
    settings.cache_clear()
    try:
        response = client.post("/admin/reload", headers=ADMIN)
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert response.status_code == 403
    assert "HOUSING_ADMIN_TOKEN" in response.json()["detail"]


def test_reload_switches_every_worker_to_the_stores_latest(client: TestClient, champion: dict) -> None:
    response = client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["switched"] is True
    assert body["bento_tag"] == champion["bento_model"]
    assert {worker["bento_tag"] for worker in body["workers"]} == {champion["bento_model"]}
    assert client.get("/model").json()["bento_tag"] == champion["bento_model"]


def test_one_retraining_at_a_time(client: TestClient) -> None:
    status = client.get("/admin/retrain", headers=ADMIN)
    assert status.status_code == 200
    assert status.json()["running"] is False
    with job_lock(settings().prediction_db.parent):
        busy = client.post("/admin/retrain", headers=ADMIN, json={"force": True})
        assert client.get("/admin/retrain", headers=ADMIN).json()["running"] is True
    assert busy.status_code == 409
    assert busy.json()["detail"] == "retrain: a retraining is already running"


def test_bad_admin_bodies_are_4xx_naming_the_field_and_rule(client: TestClient) -> None:
    response = client.post("/admin/retrain", headers=ADMIN, json={"force": "maybe", "extra": 1})
    assert response.status_code == 422
    errors = {tuple(error["loc"]): error["msg"] for error in response.json()["detail"]}
    assert errors == {
        ("body", "force"): "Input should be a valid boolean, unable to interpret input",
        ("body", "extra"): "Extra inputs are not permitted",
    }


def test_rollback_past_the_first_champion_is_refused(client: TestClient, champion: dict) -> None:
    response = client.post("/admin/rollback", headers=ADMIN, json={"reason": "test"})
    assert response.status_code == 409
    assert f"version {champion['version']} was the first champion" in response.json()["detail"]
    assert client.get("/model").json()["model_version"] == champion["version"]


def test_history_lists_the_first_promotion(client: TestClient, champion: dict) -> None:
    response = client.get("/model/history")
    assert response.status_code == 200, response.text
    (entry,) = response.json()
    assert (entry["action"], entry["version"], entry["reason"]) == ("promote", champion["version"], "first champion")
    assert entry["champion_before"] is None
    assert entry["metrics_after"]["rmse"] == pytest.approx(champion["test"]["rmse"], rel=1e-4)


def test_a_project_without_a_registry_is_not_given_one(
    client: TestClient, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pipeline has not run here: the service must not create (and migrate) the registry's database.
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setenv("HOUSING_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings.cache_clear()
    try:
        warm_registry_client()
        answer = client.get("/model/history")
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert answer.status_code == 503
    assert answer.json()["detail"] == "history: no model registry yet; run the pipeline (make pipeline) first"
    assert not (tmp_path / "mlflow.db").exists()


def test_without_a_project_the_registry_calls_say_so(
    client: TestClient, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOUSING_PROJECT_DIR", str(tmp_path))  # what a container without the DVC project has
    settings.cache_clear()
    try:
        answers = [client.get("/model/history"), client.post("/admin/rollback", headers=ADMIN),
                   client.post("/admin/retrain", headers=ADMIN)]  # fmt: skip
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    for answer, command in zip(answers, ("history", "rollback", "retrain"), strict=True):
        assert answer.status_code == 503
        detail = answer.json()["detail"]
        assert detail == f"{command}: no DVC project (params.yaml) in the service's HOUSING_PROJECT_DIR"
        assert str(tmp_path) not in answer.text  # the server's paths are its own
    assert client.get("/model/history", params={"limit": 0}).status_code == 422


@pytest.mark.parametrize(
    ("path", "body"), [("/admin/shadow", {"version": "u\u00db"}), ("/admin/rollback", {"to": "1; x"})]
)
def test_a_version_that_is_not_a_number_is_a_422_naming_the_field(client: TestClient, path: str, body: dict) -> None:
    response = client.post(path, headers=ADMIN, json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", next(iter(body))]
    assert "should match pattern" in error["msg"]
