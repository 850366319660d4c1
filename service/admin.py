"""Admin endpoints (reload, retrain, rollback, feedback corrections) behind a bearer token; the promotion history.

Reload and corrections happen in process (service.reload, the prediction log).
Retrain and rollback change the registry and run DVC, so they run the
``housing`` CLI in the project directory (``HOUSING_PROJECT_DIR``), exactly as
an operator would, without the service's tokens in its environment. The public
history is read in process from the registry, a few calls at a time, and reused
for a few seconds (service.view_cache): no public request starts a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import bentoml
from fastapi import APIRouter, Depends, Header, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from housing.decisions import history as decision_history
from housing.params import load_params
from housing.registry import store_exists, tracking_uri
from housing.settings import settings, variable, without_secrets
from service.api_models import FeedbackCorrected, FeedbackCorrection, RetrainRequest, RollbackRequest
from service.auth import bearer_refusal
from service.reload import roll_out
from service.retrain_jobs import is_running, log_path, read_status

if TYPE_CHECKING:  # MLflow loads on the first registry read (see housing.model_format)
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CLI_TIMEOUT_S = 600
# Registry reads at once per worker; more wait their turn.
_REGISTRY_READS = threading.BoundedSemaphore(2)


def require_admin(
    authorization: str | None = Header(default=None, description="`Bearer <HOUSING_ADMIN_TOKEN>`"),
) -> None:
    """401 without a bearer token, 403 with a wrong one or when the service has none configured."""
    refusal = bearer_refusal(authorization, settings().admin_token, "admin", variable("admin_token"))
    if refusal is not None:
        status, message = refusal
        headers = {"WWW-Authenticate": "Bearer"} if status == HTTPStatus.UNAUTHORIZED else None
        raise HTTPException(status, message, headers)


admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
history = APIRouter(tags=["model"])


@admin.post("/reload")
async def reload() -> dict[str, Any]:
    """Serve the BentoML store's latest model (the champion) on every worker, without a restart."""
    store = cast(Any, bentoml.get_current_service()).log.store
    rollout = await asyncio.to_thread(roll_out, store, str(bentoml.models.get(settings().model_tag).tag))
    return _rolled_out(rollout)


@admin.post("/retrain", status_code=202)
def start_retraining(request: RetrainRequest | None = None) -> dict[str, Any]:
    """Start ``housing retrain`` in the background; poll ``GET /admin/retrain`` for the outcome."""
    if is_running(settings().prediction_db):
        raise HTTPException(409, "retrain: a retraining is already running")
    return _start_retraining(force=bool(request and request.force))


class Alert(BaseModel):
    """One alert of an Alertmanager notification: what the trigger reads of it."""

    model_config = ConfigDict(extra="ignore")  # Alertmanager sends annotations, times, URLs, fingerprints too

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)


class AlertNotification(BaseModel):
    """The body of Alertmanager's webhook (version 4): https://prometheus.io/docs/alerting/latest/configuration/"""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[Alert] = Field(max_length=1000)


@admin.post("/retrain/alert", status_code=202)
def retrain_on_alert(notification: AlertNotification) -> dict[str, Any]:
    """Alertmanager's webhook receiver: a firing drift or accuracy alert starts ``housing retrain`` (not forced).

    The check itself decides whether drift or the feedback error still demand a retraining. A check already
    running answers the alert as well (202, ``running``): a 4xx would only make Alertmanager log an error.
    """
    firing = sorted({alert.labels.get("alertname", "") for alert in notification.alerts if alert.status == "firing"})
    if not firing:
        return {"state": "ignored", "reason": "no firing alert"}
    if is_running(settings().prediction_db):
        return {"state": "running", "alerts": firing, "status": "/admin/retrain"}
    return {**_start_retraining(force=False), "alerts": firing}


def _start_retraining(force: bool) -> dict[str, Any]:
    """``housing retrain`` as a background process with its output in the retraining log."""
    db = settings().prediction_db
    args = ["retrain", "--force"] if force else ["retrain"]
    log_path(db).parent.mkdir(parents=True, exist_ok=True)
    with log_path(db).open("a") as log:
        process = subprocess.Popen(_cli(*args), cwd=settings().project_dir, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv  # nosec B603
                                   env=without_secrets(os.environ), start_new_session=True)  # fmt: skip
    return {"state": "started", "pid": process.pid, "status": "/admin/retrain"}


@admin.get("/retrain")
def retraining_status() -> dict[str, Any]:
    """The latest retraining: state, reasons, decision, and the tail of its log."""
    db = settings().prediction_db
    tail = log_path(db).read_text().splitlines()[-20:] if log_path(db).exists() else []
    return {**read_status(db), "running": is_running(db), "log_tail": tail}


@admin.post("/rollback")
async def rollback(request: RollbackRequest | None = None) -> dict[str, Any]:
    """Move ``@champion`` back to the previous champion (or ``to``); every worker follows."""
    request = request or RollbackRequest()
    args = ["rollback", "--reason", request.reason] + (["--to", request.to] if request.to else [])
    code, out = await _run_cli(*args)
    if code != 0:
        raise HTTPException(409, out.strip().splitlines()[-1] if out.strip() else f"rollback failed ({code})")
    result = json.loads(out)
    _rolled_out(result["rollout"])
    return result


@admin.put("/feedback")
def correct_feedback(correction: FeedbackCorrection) -> FeedbackCorrected:
    """Replace recorded feedback; the old and new prices and the reason are kept in ``feedback_corrections``."""
    log = cast(Any, bentoml.get_current_service()).log
    previous = log.correct_feedback(correction.request_id, correction.index, correction.actual_price_usd,
                                    correction.reason)  # fmt: skip
    if previous is None:
        raise HTTPException(404, f"request_id: no feedback for {correction.request_id!r} (index {correction.index})")
    return FeedbackCorrected(request_id=correction.request_id, index=correction.index, previous_price_usd=previous,
                             actual_price_usd=correction.actual_price_usd)  # fmt: skip


@history.get("/model/history")
def model_history(limit: int = Query(default=100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Every promotion, refusal and rollback, newest first: versions, when, why, metrics before and after."""
    service = cast(Any, bentoml.get_current_service())
    key = ("history", limit, service.model.info.bento_tag)  # a reload or rollback moves the tag: a fresh answer
    return cast(list[dict[str, Any]], service.views.get(key, lambda: _read_history(limit)))


def warm_registry_client() -> None:
    """Make the registry client before the worker is ready, so that the first history call is as fast as the others.

    Making it takes about two seconds of CPU: done in the background, it slowed every request of a fresh worker.
    A store that cannot be read is left to the first history call, which answers 503.
    """
    if (settings().project_dir / "params.yaml").is_file() and store_exists(_tracking_uri()):
        try:
            _client(_tracking_uri())
        except Exception:  # the history call reports it
            log.warning("the model registry is not readable: /model/history will answer 503", exc_info=True)


def _tracking_uri() -> str:
    """MLflow's store, as the pipeline in the service's project finds it (housing.registry)."""
    return tracking_uri(settings().project_dir)


def _project_params(command: str) -> Path:
    """The project's params.yaml; 503 where the service runs without its DVC project (an image)."""
    params = settings().project_dir / "params.yaml"
    if not params.is_file():
        raise HTTPException(503, f"{command}: no DVC project (params.yaml) in the service's HOUSING_PROJECT_DIR")
    return params


def _read_history(limit: int) -> list[dict[str, Any]]:
    """The registry's decisions, read in process from the project's MLflow store."""
    params = _project_params("history")
    uri = _tracking_uri()
    if not store_exists(uri):
        raise HTTPException(503, "history: no model registry yet; run the pipeline (make pipeline) first")
    with _REGISTRY_READS:
        try:
            return decision_history(_client(uri), load_params(params).register_, limit)
        except Exception:  # an unreachable or broken store (MLflow, SQLAlchemy, the driver): the reader's problem
            log.exception("history: the model registry at %s is not readable", uri)
            raise HTTPException(503, "history: the model registry is not readable") from None


@lru_cache(maxsize=4)
def _client(tracking_uri: str) -> MlflowClient:
    """One client per store and worker: making one (and its database engine) cost about two seconds."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def _cli(*args: str) -> list[str]:
    """The argv of ``housing <args>`` for the project; 503 where the service runs without one (an image)."""
    _project_params(args[0])
    config = settings()
    return [sys.executable, "-m", "operations.cli", *args, "--project-dir", str(config.project_dir.resolve()),
            "--db", str(config.prediction_db.resolve())]  # fmt: skip


async def _run_cli(*args: str) -> tuple[int, str]:
    """Run the CLI; (exit code, stdout), or (exit code, the end of stderr) when it failed."""
    process = await asyncio.create_subprocess_exec(
        *_cli(*args), cwd=settings().project_dir, env=without_secrets(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    code = process.returncode or 0
    return code, out.decode() if code == 0 or out.strip() else err.decode()[-2000:]


def _rolled_out(rollout: dict[str, Any]) -> dict[str, Any]:
    if not rollout["switched"]:
        failed = [f"worker {w['worker']}: {w['error'] or w['bento_tag']}" for w in rollout["workers"]]
        raise HTTPException(503, f"reload: not every worker serves {rollout['bento_tag']} ({'; '.join(failed)})")
    return rollout
