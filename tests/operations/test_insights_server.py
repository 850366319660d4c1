"""`housing report` on the log a real `bentoml serve` filled over HTTP: every number equals SQL over that log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from devtools.houses import request_records
from housing.columns import TARGET_BOUNDS, TARGET_COLUMN
from housing.log.store import SQLiteStore
from housing.params import load_params
from tests.operations.insights_sql import assert_drift_matches_sql, assert_report_matches_sql, housing_report
from tests.service.conftest import FEEDBACK
from tests.service.server import start_server
from tests.workspace import Workspace

pytestmark = pytest.mark.integration

SINGLES, BATCH, INVOCATIONS = 20, 150, 20


def drive(http: httpx.Client, labeled: pd.DataFrame) -> int:
    """Single, batch and MLflow-style requests, the second batch with incomes raised; feedback on some houses.

    Returns the number of feedback answers sent.
    """
    houses = labeled.drop(columns=TARGET_COLUMN)
    actual = labeled[TARGET_COLUMN].clip(TARGET_BOUNDS.low, TARGET_BOUNDS.high).tolist()
    answers = []
    started = time.monotonic()
    for i, house in enumerate(request_records(houses.head(SINGLES))):
        response = http.post("/predict", json=house)
        assert response.status_code == 200, response.text
        answers.append({"request_id": response.json()["request_id"], "index": 0, "actual_price_usd": actual[i]})
    first, second = houses.iloc[SINGLES : SINGLES + BATCH], houses.iloc[SINGLES + BATCH : SINGLES + 2 * BATCH]
    richer = second.assign(median_income=(second.median_income * 1.8).clip(upper=15.0))
    for offset, batch, step in [(SINGLES, first, 3), (SINGLES + BATCH, richer, 5)]:
        if batch is richer:
            # A pause longer than everything before it: the second of two equal time windows holds the richer houses.
            time.sleep(time.monotonic() - started + 0.5)
        response = http.post("/predict_batch", json=request_records(batch))
        assert response.status_code == 200, response.text
        request_id = response.json()["request_id"]
        answers += [{"request_id": request_id, "index": i, "actual_price_usd": actual[offset + i]}
                    for i in range(0, BATCH, step)]  # fmt: skip
    tail = houses.iloc[SINGLES + 2 * BATCH : SINGLES + 2 * BATCH + INVOCATIONS]
    assert http.post("/invocations", json={"dataframe_records": request_records(tail)}).status_code == 200
    for answer in answers:
        assert http.post("/feedback", json=answer, headers=FEEDBACK).status_code == 200
    return len(answers)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> tuple[Path, int]:
    """The SQLite log of a real server that priced houses and took feedback, then shut down; feedback count."""
    labeled = pd.read_csv(workspace.path / "data" / "processed" / "test.csv")
    server = start_server(tmp_path_factory.mktemp("insights") / "server")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            answers = drive(http, labeled)
    finally:
        # A graceful stop writes what the log's writer still holds.
        assert server.stop() is not None
    return server.db, answers


def test_report_on_a_served_log_equals_sql(served: tuple[Path, int], workspace: Workspace, tmp_path: Path) -> None:
    db, answers = served
    out = tmp_path / "insights"
    project = ["--project-dir", str(workspace.path), "--min-rows", "50", "--windows", "2"]
    report = housing_report("--db", str(db), "--out", str(out), *project)
    store = SQLiteStore(db, read_only=True)
    try:
        edges = load_params(workspace.path / "params.yaml").prepare.income_bands
        assert_report_matches_sql(report, store, edges)
        profile: dict[str, Any] = json.loads((workspace.path / "models" / "reference_profile.json").read_text())
        assert_drift_matches_sql(report, store, profile)
    finally:
        store.close()
    # What was sent is what the report counts.
    assert report["totals"] == {"houses": SINGLES + 2 * BATCH + INVOCATIONS, "requests": SINGLES + 3}
    assert set(report["latency"]["by_endpoint"]) == {"predict", "predict_batch", "invocations"}
    assert report["feedback"]["overall"]["n"] == answers
    # The service logged each price's interval: coverage is measured on every house with feedback.
    assert report["feedback"]["overall"]["with_bounds"] == answers
    assert 0 <= report["feedback"]["overall"]["coverage"] <= 1
    # The raised incomes are seen: against the training data, and in the findings.
    assert "median_income" in report["inputs"]["drifted_features"]
    assert any("median_income" in sentence and "drifted" in sentence for sentence in report["findings"])
    first, second = report["drift_over_time"]["windows"]
    assert (first["rows"], second["rows"]) == (SINGLES + BATCH, BATCH + INVOCATIONS)
    assert first["psi"]["median_income"] < second["psi"]["median_income"]
    assert any(sentence.startswith("median_income changed most over time") for sentence in report["findings"])
    text = (out / "report.md").read_text()
    for sentence in report["findings"]:
        assert sentence in text
    assert {path.name for path in (out / "figures").iterdir()} >= {"traffic.png", "latency.png", "inputs.png",
                                                                   "error_by_slice.png"}  # fmt: skip
