"""Retraining: notice that the world moved, retrain on the data plus feedback, switch the service.

``housing retrain`` (and ``POST /admin/retrain``, which runs it in the
background) checks the served model against the prediction log: drift of the
latest inputs, and its RMSE on the houses whose sale price came back. When
either passes its threshold (``params.yaml`` section ``retrain``), it runs the
DVC pipeline, whose ``feedback`` stage adds the labeled houses and whose
``register`` stage promotes the new model only if it beats the champion. A
promotion is then rolled out to the running service's workers (housing.log.reloads).
Progress and the outcome are the job's record in the log's store (housing.log.job_records).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bentoml

from housing.drift_check import check_drift
from housing.jobs import RETRAIN
from housing.log.job_records import JobRecord
from housing.log.queries import LogReader
from housing.log.reloads import roll_out_from
from housing.log.store import LogStore
from housing.model_format import ModelMetadata, reference_of
from housing.params import RetrainParams, load_params
from housing.settings import settings, variable, without_secrets


def reasons_to_retrain(bento_model: bentoml.Model, reads: LogReader, params: RetrainParams) -> list[str]:
    """Why the served model should be retrained: drifted features, accuracy lost on feedback."""
    reasons = []
    if params.on_drift:
        report = check_drift(reference_of(bento_model), reads)
        if report["drift_detected"]:
            reasons.append("drift in " + ", ".join(report["drifted_features"]))
    meta = ModelMetadata.model_validate(bento_model.info.metadata)
    version, test_rmse = meta.mlflow_version, meta.test_metrics["rmse"]
    for row in reads.accuracy():
        enough = row["model_version"] == version and row["n"] >= params.min_feedback
        if enough and row["rmse"] > params.max_rmse_ratio * test_rmse:
            reasons.append(
                f"feedback RMSE {row['rmse']:,.0f} USD over {row['n']} houses passes "
                f"{params.max_rmse_ratio} x the test RMSE {test_rmse:,.0f} of v{version}"
            )
    return reasons


def retrain(project: Path, db: Path, store: LogStore, force: bool = False) -> dict[str, Any]:
    """Retrain if needed (or ``force``) on the log in ``store`` (the SQLite file ``db``, unless the settings name
    PostgreSQL); the outcome, also the job's record in the store."""
    started = time.time()
    record = JobRecord(store, RETRAIN)
    status: dict[str, Any] = {"state": "running", "started": started, "pid": os.getpid(), "project": str(project)}
    record.write(status)
    try:
        status |= _retrain(project, db, LogReader(store), force, started)
        status["state"] = "done"
    except Exception as exc:
        status |= {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        status["finished"] = time.time()
        record.write(status)
    return status


def _retrain(project: Path, db: Path, reads: LogReader, force: bool, started: float) -> dict[str, Any]:
    params = load_params(project / "params.yaml")
    served = bentoml.models.get(settings().model_tag)
    reasons = reasons_to_retrain(served, reads, params.retrain)
    if not reasons and not force:
        return {"retrained": False, "reasons": [], "message": "no drift, and accuracy on feedback within bounds"}
    trigger = "; ".join(reasons) or "forced"
    where = {variable("prediction_db"): str(db.resolve()), variable("retrain_reason"): trigger}
    env = without_secrets(os.environ) | where
    dvc = Path(sys.executable).with_name("dvc")
    print(f"retraining ({trigger}): dvc repro in {project}", flush=True)
    command = [str(dvc if dvc.exists() else "dvc"), "repro"]
    result = subprocess.run(command, cwd=project, env=env, check=False)  # noqa: S603 - fixed argv  # nosec B603
    if result.returncode != 0:
        raise RuntimeError(f"dvc repro failed with exit code {result.returncode}")
    registration = json.loads((project / params.register_.registration_path).read_text())
    decision = registration["decision"]
    outcome = {"retrained": decision["ts"] >= started, "reasons": reasons, "champion": registration["version"]}
    if not outcome["retrained"]:
        return outcome | {"message": "pipeline up to date: no new feedback, data, params or code"}
    outcome |= {"decision": decision, "message": f"{decision['action']} v{decision['version']}: {decision['reason']}"}
    if decision["action"] == "promote":
        outcome["workers"] = roll_out_from(db, registration["bento_model"])
    return outcome
