"""The retraining trigger: accuracy lost on feedback, drift, and a run that finds nothing to do."""

from __future__ import annotations

import json
from pathlib import Path

import bentoml
import pytest

from housing.jobs import JobRunner
from housing.log.queries import LogReader
from housing.log.store import SQLiteStore, migrate
from housing.log.writer import PredictionLog
from housing.params import RetrainParams
from operations.retrain import reasons_to_retrain, retrain
from tests.housing.log.rows import give_feedback, row


def logged(path: Path, version: str, houses: int, error_usd: float) -> PredictionLog:
    """A prediction log where ``houses`` priced by ``version`` got feedback off by ``error_usd``."""
    log = PredictionLog(path)
    log.add([{**row(f"r{i}"), "model_version": version} for i in range(houses)])
    give_feedback(log, [(f"r{i}", 0, 123456.0 + error_usd) for i in range(houses)])
    return log


@pytest.fixture
def served(champion: dict) -> bentoml.Model:
    return bentoml.models.get(champion["bento_model"])


ACCURACY_ONLY = RetrainParams(on_drift=False, min_feedback=50, max_rmse_ratio=1.25)


def test_lost_accuracy_asks_for_retraining(tmp_path: Path, served: bentoml.Model, champion: dict) -> None:
    test_rmse = champion["test"]["rmse"]
    log = logged(tmp_path / "p.db", champion["version"], houses=60, error_usd=2 * test_rmse)
    (reason,) = reasons_to_retrain(served, LogReader(log.store), ACCURACY_ONLY)
    assert reason.startswith(f"feedback RMSE {2 * test_rmse:,.0f} USD over 60 houses passes 1.25 x the test RMSE")
    log.close()


@pytest.mark.parametrize(
    ("houses", "error_factor", "version"),
    [(40, 2.0, None), (60, 1.1, None), (60, 2.0, "another")],
    ids=["too little feedback", "within bounds", "another version's feedback"],
)
def test_no_reason_without_enough_evidence(
    tmp_path: Path, served: bentoml.Model, champion: dict, houses: int, error_factor: float, version: str | None
) -> None:
    log = logged(tmp_path / "p.db", version or champion["version"], houses, error_factor * champion["test"]["rmse"])
    assert reasons_to_retrain(served, LogReader(log.store), ACCURACY_ONLY) == []
    log.close()


def test_drift_asks_for_retraining(tmp_path: Path, served: bentoml.Model, test_rows) -> None:
    log = PredictionLog(tmp_path / "p.db")
    shifted = test_rows.head(300).assign(median_income=lambda d: d["median_income"] * 2.5)
    log.add([{**row(f"r{i}"), **house} for i, house in enumerate(shifted.to_dict("records"))])
    assert log.flush()
    (reason,) = reasons_to_retrain(
        served, LogReader(log.store), RetrainParams(on_drift=True, min_feedback=50, max_rmse_ratio=1.25)
    )
    assert reason.startswith("drift in ")
    assert "median_income" in reason
    log.close()


def test_nothing_to_do_is_reported_without_running_the_pipeline(tmp_path: Path, served: bentoml.Model) -> None:
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    store = SQLiteStore(tmp_path / "p.db")
    migrate(store)
    outcome = retrain(tmp_path, tmp_path / "p.db", store)
    assert outcome["retrained"] is False
    assert outcome["message"] == "no drift, and accuracy on feedback within bounds"
    status = JobRunner(store, tmp_path).status()  # the job's record, as every worker reads it
    assert status["state"] == "done"
    assert status["finished"] >= status["started"]
    assert {key: status[key] for key in outcome} == json.loads(json.dumps(outcome))
    assert (status["running"], status["log_tail"]) == (False, [])
    assert not (tmp_path / "dvc.lock").exists()
    store.close()
