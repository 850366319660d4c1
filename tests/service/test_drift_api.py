"""GET /drift and `housing drift` over a real prediction log, with the small champion's reference profile."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient

from devtools.houses import request_records
from housing.drift_check import check_drift
from housing.drift_stats import reference_profile
from housing.log.queries import LogReader
from housing.log.writer import PredictionLog
from operations.cli import main as cli_main
from tests.workspace import BIN, ROOT

pytestmark = pytest.mark.integration


def housing(db: str, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "housing"), "drift", "--db", db, "--out", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_too_few_logged_houses_give_no_verdict(test_rows: pd.DataFrame, tmp_path: Path) -> None:
    profile = {**reference_profile(test_rows), "thresholds": {"psi": 0.2, "p_value": 0.001}}
    profile["window"] = {"rows": 1000, "min_rows": 200}
    log = PredictionLog(tmp_path / "empty.db")
    assert check_drift(profile, LogReader(log.store)) == {
        "status": "insufficient_data",
        "rows": 0,
        "min_rows": 200,
        "drift_detected": False,
    }
    log.close()


def test_drift_stays_quiet_then_names_the_shifted_feature(
    client: TestClient, service_env: dict, test_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The window is the latest 1,000 priced houses: fill it with fresh rows, then with shifted ones.
    price(client, test_rows.sample(1000, replace=True, random_state=1), service_env)
    quiet = client.get("/drift").json()
    assert quiet["status"] == "ok"
    assert quiet["rows"] == 1000
    assert quiet["drift_detected"] is False, quiet["drifted_features"]
    assert set(quiet["features"]) >= {"median_income", "ocean_proximity"}
    # In process here (the entry point itself runs as a subprocess below).
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["drift", "--db", service_env["HOUSING_PREDICTION_DB"], "--out", str(tmp_path / "quiet"), "--fail-on-drift"]
        )
    assert exit_info.value.code == 0
    assert "no drift" in capsys.readouterr().out
    assert "Drifted features: none" in (tmp_path / "quiet" / "drift.md").read_text()

    richer = test_rows.sample(1000, replace=True, random_state=2)
    richer["median_income"] = (richer["median_income"] * 1.6).clip(upper=15)
    price(client, richer, service_env)
    shifted = client.get("/drift").json()
    assert shifted["drift_detected"] is True
    assert "median_income" in shifted["drifted_features"]

    cli = housing(service_env["HOUSING_PREDICTION_DB"], tmp_path / "shifted", "--fail-on-drift")
    assert cli.returncode == 1
    assert "median_income" in cli.stdout
    written = json.loads((tmp_path / "shifted" / "drift.json").read_text())
    assert written["drifted_features"] == shifted["drifted_features"]
    assert "| median_income | psi+ks |" in (tmp_path / "shifted" / "drift.md").read_text()


def price(client: TestClient, houses: pd.DataFrame, service_env: dict) -> None:
    """Price the houses, then wait until the asynchronous writer has logged them all."""
    db_path = service_env["HOUSING_PREDICTION_DB"]
    expected = _logged(db_path) + len(houses)
    for start in range(0, len(houses), 500):  # the test service's batch limit
        assert client.post("/predict_batch", json=request_records(houses.iloc[start : start + 500])).status_code == 200
    deadline = time.monotonic() + 10
    while _logged(db_path) < expected:
        assert time.monotonic() < deadline, "predictions did not reach the log"
        time.sleep(0.05)


def _logged(db_path: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
