"""A shadow on a real `bentoml serve` (two workers): started through the admin API, it prices the same houses as
the champion off the request path; feedback labels them; GET /shadow compares; promotion refuses on too few labelled
houses (through the admin API and the CLI) and says why in the history; stopping ends it; a challenger that does not
load changes nothing for clients; and a SIGTERM loses no shadowed house. The registry is a copy of the session
pipeline's, so its history stays the other tests'."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from devtools.houses import request_records
from housing.log.queries import LogReader
from housing.log.reloads import CHALLENGER, request_model, this_replica, wait_for_workers
from housing.log.store import SQLiteStore
from tests.service.conftest import ADMIN, ADMIN_TOKEN, FEEDBACK
from tests.service.server import Server, inherited_environment, start_server
from tests.workspace import BIN, ROOT, Workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> Path:
    """The session's project (params.yaml, the registry's database) copied: its registry's artefacts are shared."""
    copy = tmp_path_factory.mktemp("shadow-project")
    for name in ("params.yaml", "mlflow.db"):
        shutil.copy(workspace.path / name, copy / name)
    return copy


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, project: Path) -> Iterator[Server]:
    env = {"HOUSING_ADMIN_TOKEN": ADMIN_TOKEN, "HOUSING_PROJECT_DIR": str(project), "HOUSING_VIEW_CACHE_S": "0",
           "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}  # fmt: skip
    running = start_server(tmp_path_factory.mktemp("shadow-server"), env)
    yield running
    running.stop()


def wait_for(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def shadowed(server: Server, version: str) -> int:
    store = SQLiteStore(server.db, read_only=True)
    try:
        return LogReader(store).shadowed(version)
    finally:
        store.close()


def test_a_shadow_from_start_to_refused_promotion(
    server: Server, project: Path, champion: dict, test_rows: pd.DataFrame
) -> None:
    version = champion["version"]  # the champion against itself: the same prices, so nothing to prove
    houses = request_records(test_rows.head(40))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/admin/shadow", json={"version": version}).status_code == 401
        started = http.post("/admin/shadow", json={"version": version, "fraction": 1.0}, headers=ADMIN)
        assert started.status_code == 200, started.text
        rollout = started.json()["rollout"]
        assert rollout["switched"]
        assert {w["challenger"] for w in rollout["workers"]} == {started.json()["bento_tag"]}
        assert started.json()["bento_tag"].startswith("housing-price-model-challenger:")
        assert http.get("/health").json()["shadow_challenger"] == version
        assert http.get("/model").json()["model_version"] == version  # the champion still answers

        singles = [http.post("/predict", json=house).json() for house in houses[:20]]
        batch = http.post("/predict_batch", json=houses[20:]).json()
        assert http.post("/predict_columns", json={k: [h[k] for h in houses[:3]] for k in houses[0]}
                         ).status_code == 200  # fmt: skip  # not shadowed
        for single in singles[:10]:
            sold = {"request_id": single["request_id"], "actual_price_usd": single["price_usd"] * 0.9}
            assert http.post("/feedback", json=sold, headers=FEEDBACK).status_code == 200
        assert wait_for(lambda: shadowed(server, version) == 40), shadowed(server, version)

        comparison = http.get("/shadow").json()
        assert comparison["active"] is True
        assert comparison["challenger_version"] == comparison["champion_version"] == version
        assert comparison["houses_shadowed"] == 40
        assert comparison["price_difference"]["mean_usd"] == pytest.approx(0.0, abs=1e-6)
        assert sum(d["houses"] for d in comparison["slices"]["ocean_proximity"].values()) == 40
        assert sum(d["houses"] for d in comparison["slices"]["income_band"].values()) == 40
        assert comparison["challenger_latency"]["per_house_ms"] > 0
        labelled = comparison["labelled"]
        assert labelled["houses"] == 10
        assert labelled["champion"] == labelled["challenger"]
        assert labelled["wilcoxon_p"] == 1.0
        assert comparison["verdict"]["promote"] is False
        assert "only 10 shadowed houses have feedback" in comparison["verdict"]["reason"]
        assert batch["count"] == 20
        metrics = http.get("/metrics").text
        assert f'housing_shadow_houses_total{{model_version="{version}"}}' in metrics
        assert "housing_shadow_price_difference_usd_bucket" in metrics

        refused = http.post("/admin/shadow/promote", headers=ADMIN)
        assert refused.status_code == 409
        assert "only 10 shadowed houses have feedback" in refused.json()["detail"]
        cli = subprocess.run(
            [str(BIN / "housing"), "shadow", "promote", "--project-dir", str(project), "--db", str(server.db)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
            env={**inherited_environment(), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"},
        )  # fmt: skip
        assert cli.returncode == 1, cli.stderr
        assert json.loads(cli.stdout)["decision"]["action"] == "reject"
        assert "refused: shadow: only 10 shadowed houses have feedback" in cli.stderr
        entries = http.get("/model/history").json()
        assert [(e["action"], e["trigger"]) for e in entries[:2]] == [("reject", "shadow"),
                                                                      ("reject", "shadow (admin API)")]  # fmt: skip
        assert entries[0]["metrics_after"]["shadow_labelled"] == 10
        assert http.get("/model").json()["model_version"] == version

        stopped = http.delete("/admin/shadow", headers=ADMIN)
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["stopped_version"] == version
        assert stopped.json()["rollout"]["switched"]
        assert http.get("/health").json()["shadow_challenger"] is None
        http.post("/predict", json=houses[0])
        assert http.get("/shadow").json()["active"] is False

        # A challenger that does not load (no such model in the store) changes nothing for clients.
        missing = "housing-price-model-challenger:missing"
        store = SQLiteStore(server.db)
        try:
            request_model(store, missing, this_replica(), CHALLENGER, 1.0)
            switched, _ = wait_for_workers(store, this_replica(), missing, 30, 10, CHALLENGER)
        finally:
            store.close()
        assert not switched
        health = wait_for(lambda: (h := http.get("/health").json())["status"] == "degraded" and h)
        assert any(error.startswith(f"challenger {missing}:") for error in health["model_errors"]), health
        assert http.post("/predict", json=houses[0]).json()["price_usd"] == singles[0]["price_usd"]
        assert 'housing_shadow_failures_total{stage="load"}' in http.get("/metrics").text

        # Started again, then SIGTERM right after a burst: every shadowed house is in the log.
        assert http.post("/admin/shadow", json={"version": version}, headers=ADMIN).status_code == 200
        for house in houses[:15]:
            assert http.post("/predict", json=house).status_code == 200
    assert server.stop() is not None  # stopped by SIGTERM, not killed
    assert shadowed(server, version) == 55
