"""Retraining end to end: a real pipeline and `bentoml serve`, drift, retrain, promote, refuse, roll back.

The workspace, its MLflow store and its BentoML store are this module's own: the
champion changes here, which the other service tests must not see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from devtools.houses import request_records
from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from service.api_models import EXAMPLE_HOUSE
from tests.service.conftest import FEEDBACK
from tests.service.server import Server, start_server
from tests.workspace import BIN, Workspace, make_workspace, small_params

pytestmark = pytest.mark.integration

TOKEN = "retraining-test-token"  # noqa: S105 - a test's own token
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
LINEAR_ONLY = {"linear": {"search": "grid", "candidates": [{"model": "ols"}]}}


def write_params(ws: Workspace, families: dict[str, Any]) -> None:
    """The data scientist's move: change the model search in params.yaml."""
    params = small_params()
    params["train"]["families"] = families
    (ws.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, housing: pd.DataFrame) -> Workspace:
    """A workspace whose first champion is a plain linear model."""
    root = tmp_path_factory.mktemp("retraining")
    source = root / "housing-sample.csv"
    housing.sample(3000, random_state=2).to_csv(source, index=False)
    path = root / "repo"
    env = make_workspace(path, source, small_params()) | {"BENTOML_HOME": str(root / "bentoml")}
    workspace = Workspace(path, env, "")
    write_params(workspace, LINEAR_ONLY)
    workspace.run("dvc", "repro")
    return workspace


@pytest.fixture(scope="module")
def server(ws: Workspace) -> Iterator[Server]:
    env = {key: ws.env[key] for key in ("BENTOML_HOME", "HOUSING_DATA_SOURCE")}
    env |= {"HOUSING_ADMIN_TOKEN": TOKEN, "HOUSING_PROJECT_DIR": str(ws.path), "HOUSING_RELOAD_POLL_S": "0.5",
            # The retrainings it starts register into this workspace's store, whatever the suite's environment says.
            "MLFLOW_TRACKING_URI": f"sqlite:///{ws.path / 'mlflow.db'}"}  # fmt: skip
    running = start_server(ws.path.parent / "server", env)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


class Traffic:
    """Single predictions in a loop while the champion changes: every answer and its model version."""

    def __init__(self, url: str) -> None:
        self.url, self.answers = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                response = client.post("/predict", json=EXAMPLE_HOUSE)
                version = response.json()["model_version"] if response.status_code == 200 else None
                self.answers.append((response.status_code, version))
                time.sleep(0.02)


def retrain(http: httpx.Client, force: bool = False, timeout_s: float = 300) -> dict[str, Any]:
    started = http.post("/admin/retrain", headers=ADMIN, json={"force": force})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = http.get("/admin/retrain", headers=ADMIN).json()
        if status.get("pid") == started.json()["pid"] and status["state"] != "running" and not status["running"]:
            return status
        time.sleep(1)
    raise TimeoutError(http.get("/admin/retrain", headers=ADMIN).text)


def served_version(http: httpx.Client) -> str:
    return http.get("/model").json()["model_version"]


def test_drift_triggers_a_retraining_that_promotes_a_better_model(
    http: httpx.Client, server: Server, ws: Workspace, housing: pd.DataFrame
) -> None:
    assert served_version(http) == "1"
    assert http.post("/admin/retrain").status_code == 401
    assert http.post("/admin/retrain", headers={"Authorization": "Bearer nope"}).status_code == 403

    # The market moved inland: 300 inland houses are priced, and their sale prices come back.
    inland = housing[housing["ocean_proximity"] == "INLAND"].sample(300, random_state=3)
    for start in range(0, len(inland), 100):
        chunk = inland.iloc[start : start + 100]
        priced = http.post("/predict_batch", json=request_records(chunk[list(FEATURE_COLUMNS)]))
        assert priced.status_code == 200, priced.text
        for index, price in enumerate(chunk[TARGET_COLUMN]):
            receipt = http.post("/feedback", json={"request_id": priced.json()["request_id"], "index": index,
                                                   "actual_price_usd": float(price)}, headers=FEEDBACK)  # fmt: skip
            assert receipt.status_code == 200, receipt.text
    drift = http.get("/drift").json()
    assert "ocean_proximity" in drift["drifted_features"]

    write_params(ws, LINEAR_ONLY | {"gradient_boosting": small_params()["train"]["families"]["gradient_boosting"]})
    with Traffic(server.url) as traffic:
        status = retrain(http)
    assert status["state"] == "done", status
    assert status["decision"]["action"] == "promote", status["decision"]
    assert any(reason.startswith("drift in") and "ocean_proximity" in reason for reason in status["reasons"])
    assert status["workers"]["switched"] is True
    assert len(status["workers"]["workers"]) == 2  # both worker processes switched
    assert served_version(http) == "2"
    assert http.get("/model").json()["family"] == "gradient_boosting"
    # The feedback joined the training data, and not one request failed during the switch.
    assert len(pd.read_csv(ws.path / "data" / "feedback" / "labeled.csv")) == 300
    assert {status for status, _ in traffic.answers} == {200}
    versions = [version for _, version in traffic.answers]
    assert versions[-1] == "2"
    assert versions == sorted(versions, key=int)  # v1 answers, then v2 answers, never back


def test_a_worse_model_is_refused_and_the_champion_keeps_serving(http: httpx.Client, ws: Workspace) -> None:
    write_params(ws, LINEAR_ONLY)
    status = retrain(http, force=True)
    assert status["decision"]["action"] == "reject"
    assert status["decision"]["reason"].startswith("not better: RMSE")
    assert status["decision"]["version"] == "3"
    assert "workers" not in status
    assert served_version(http) == "2"
    assert http.post("/predict", json=EXAMPLE_HOUSE).json()["model_version"] == "2"


def test_rollback_restores_the_previous_champion_and_history_tells_it_all(http: httpx.Client, ws: Workspace) -> None:
    rolled = http.post("/admin/rollback", headers=ADMIN, json={"reason": "inland prices look wrong"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["decision"]["champion_after"] == "1"
    assert served_version(http) == "1"
    assert http.post("/predict", json=EXAMPLE_HOUSE).json()["model_version"] == "1"

    history = http.get("/model/history").json()
    assert [(entry["action"], entry["version"]) for entry in history] == [
        ("rollback", "1"), ("reject", "3"), ("promote", "2"), ("promote", "1"),
    ]  # fmt: skip
    promoted = history[2]
    assert promoted["trigger"].startswith("drift in")
    assert promoted["metrics_after"]["rmse"] < promoted["metrics_before"]["rmse"]
    assert history[0]["reason"] == "inland prices look wrong"
    printed = ws.run(str(BIN / "housing"), "history", "--project-dir", str(ws.path)).stdout
    assert [line.split()[2] for line in printed.splitlines()] == ["rollback", "reject", "promote", "promote"]


def test_the_cli_rolls_back_too(ws: Workspace, server: Server, http: httpx.Client) -> None:
    env = ws.env | {"HOUSING_PREDICTION_DB": str(server.db)}
    result = ws.run(str(BIN / "housing"), "rollback", "--to", "2", "--reason", "back to the better one", env=env)
    assert '"switched": true' in result.stdout
    assert served_version(http) == "2"
