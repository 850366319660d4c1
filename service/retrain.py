"""Retraining: notice that the world moved, retrain on the data plus feedback, switch the service.

``housing retrain`` (and ``POST /admin/retrain``, which runs it in the
background) checks the served model against the prediction log: drift of the
latest inputs, and its RMSE on the houses whose sale price came back. When
either passes its threshold (``params.yaml`` section ``retrain``), it runs the
DVC pipeline, whose ``feedback`` stage adds the labeled houses and whose
``register`` stage promotes the new model only if it beats the champion. A
promotion is then rolled out to the running service's workers (service.reload).
Progress and the outcome go to a status file next to the prediction log.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bentoml

from service.config import settings, without_secrets
from service.drift import check_drift
from service.model import reference_of
from service.prediction_log import PredictionLog
from service.reload import request_model, wait_for_workers
from training.config import RetrainParams, load_params
from training.registry import TRIGGER_ENV


class AlreadyRunningError(RuntimeError):
    """Another retraining holds the lock."""


def status_path(db: Path) -> Path:
    return db.parent / "retrain.json"


def log_path(db: Path) -> Path:
    return db.parent / "retrain.log"


def read_status(db: Path) -> dict[str, Any]:
    """The latest retraining's status (``{"state": "never"}`` before the first)."""
    path = status_path(db)
    return json.loads(path.read_text()) if path.exists() else {"state": "never"}


@contextmanager
def retrain_lock(db: Path) -> Iterator[None]:
    """Hold the one retraining lock of this prediction log, or raise AlreadyRunningError."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with (db.parent / "retrain.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError("a retraining is already running") from None
        yield


def is_running(db: Path) -> bool:
    try:
        with retrain_lock(db):
            return False
    except AlreadyRunningError:
        return True


def reasons_to_retrain(bento_model: bentoml.Model, log: PredictionLog, params: RetrainParams) -> list[str]:
    """Why the served model should be retrained: drifted features, accuracy lost on feedback."""
    reasons = []
    if params.on_drift:
        report = check_drift(reference_of(bento_model), log)
        if report["drift_detected"]:
            reasons.append("drift in " + ", ".join(report["drifted_features"]))
    meta: dict[str, Any] = dict(bento_model.info.metadata)
    version, test_rmse = str(meta["mlflow_version"]), float(meta["test_metrics"]["rmse"])
    for row in log.accuracy():
        enough = row["model_version"] == version and row["n"] >= params.min_feedback
        if enough and row["rmse"] > params.max_rmse_ratio * test_rmse:
            reasons.append(
                f"feedback RMSE {row['rmse']:,.0f} USD over {row['n']} houses passes "
                f"{params.max_rmse_ratio} x the test RMSE {test_rmse:,.0f} of v{version}"
            )
    return reasons


def retrain(project: Path, db: Path, force: bool = False) -> dict[str, Any]:
    """Retrain if needed (or ``force``); the outcome, also written to the status file."""
    started = time.time()
    status: dict[str, Any] = {"state": "running", "started": started, "pid": os.getpid(), "project": str(project)}
    _write_status(db, status)
    try:
        status |= _retrain(project, db, force, started)
        status["state"] = "done"
    except Exception as exc:
        status |= {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        status["finished"] = time.time()
        _write_status(db, status)
    return status


def _retrain(project: Path, db: Path, force: bool, started: float) -> dict[str, Any]:
    params = load_params(project / "params.yaml")
    served = bentoml.models.get(settings().model_tag)
    log = PredictionLog(db)
    try:
        reasons = reasons_to_retrain(served, log, params.retrain)
    finally:
        log.close()
    if not reasons and not force:
        return {"retrained": False, "reasons": [], "message": "no drift, and accuracy on feedback within bounds"}
    trigger = "; ".join(reasons) or "forced"
    env = {**without_secrets(os.environ), "HOUSING_PREDICTION_DB": str(db.resolve()), TRIGGER_ENV: trigger}
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
        outcome["workers"] = roll_out(db, registration["bento_model"])
    return outcome


def roll_out(db: Path, bento_tag: str) -> dict[str, Any]:
    """Ask the running service's workers to serve ``bento_tag`` and wait for them to switch."""
    config = settings()
    request_model(db, bento_tag)
    switched, workers = wait_for_workers(db, bento_tag, config.reload_timeout_s, config.worker_max_age_s)
    return {"bento_tag": bento_tag, "switched": switched, "workers": workers}


def _write_status(db: Path, status: dict[str, Any]) -> None:
    path = status_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
    tmp.replace(path)
