"""Admin endpoints (reload, retrain, rollback, feedback corrections) behind a bearer token; the promotion history.

Everything runs in process through the core: reloads through housing.log.reloads, corrections through
the prediction log, rollback and the history through the project's registry (housing.registry, a few
calls at a time), the retraining job through housing.jobs, which starts ``housing retrain`` in the
project directory (``HOUSING_PROJECT_DIR``) as its own process, without the service's tokens in its
environment, because it runs the DVC pipeline for minutes. The public history is reused for a few
seconds (service.view_cache): no public request starts a process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from http import HTTPStatus
from typing import Any, Literal, cast

import bentoml
from fastapi import APIRouter, Depends, Header, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from housing.jobs import AlreadyRunningError
from housing.log.reloads import roll_out
from housing.registry import NoProjectError, NoRegistryError, ProjectRegistry
from housing.settings import settings, variable, without_secrets
from service.api_models import FeedbackCorrected, FeedbackCorrection, RetrainRequest, RollbackRequest
from service.auth import bearer_refusal
from service.state import Serving, ServingState

log = logging.getLogger(__name__)

# The most decisions /model/history lists.
MAX_HISTORY = 1000


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
async def reload(state: Serving) -> dict[str, Any]:
    """Serve the BentoML store's latest model (the champion) on every worker, without a restart."""
    rollout = await asyncio.to_thread(roll_out, state.log.store, str(bentoml.models.get(settings().model_tag).tag))
    return _rolled_out(rollout)


@admin.post("/retrain", status_code=202)
def start_retraining(state: Serving, request: RetrainRequest | None = None) -> dict[str, Any]:
    """Start ``housing retrain`` in the background; poll ``GET /admin/retrain`` for the outcome."""
    if state.jobs.running():
        raise HTTPException(409, "retrain: a retraining is already running")
    return _start_retraining(state, force=bool(request and request.force))


class Alert(BaseModel):
    """One alert of an Alertmanager notification: what the trigger reads of it."""

    model_config = ConfigDict(extra="ignore")  # Alertmanager sends annotations, times, URLs, fingerprints too

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)


class AlertNotification(BaseModel):
    """The body of Alertmanager's webhook (version 4): https://prometheus.io/docs/alerting/latest/configuration/"""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"example": {"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "HousingDriftDetected"}}]}},
    )  # fmt: skip

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[Alert] = Field(max_length=1000)


@admin.post("/retrain/alert", status_code=202)
def retrain_on_alert(state: Serving, notification: AlertNotification) -> dict[str, Any]:
    """Alertmanager's webhook receiver: a firing drift or accuracy alert starts ``housing retrain`` (not forced).

    The check itself decides whether drift or the feedback error still demand a retraining. A check already
    running answers the alert as well (202, ``running``): a 4xx would only make Alertmanager log an error.
    """
    firing = sorted({alert.labels.get("alertname", "") for alert in notification.alerts if alert.status == "firing"})
    if not firing:
        return {"state": "ignored", "reason": "no firing alert"}
    if state.jobs.running():
        return {"state": "running", "alerts": firing, "status": "/admin/retrain"}
    return {**_start_retraining(state, force=False), "alerts": firing}


def _start_retraining(state: ServingState, force: bool) -> dict[str, Any]:
    config = settings()
    _registry("retrain")  # the job needs the DVC project: 503 at once where there is none
    try:
        pid = state.jobs.start(config.project_dir, config.prediction_db, without_secrets(os.environ), force=force)
    except AlreadyRunningError:
        raise HTTPException(409, "retrain: a retraining is already running") from None
    return {"state": "started", "pid": pid, "status": "/admin/retrain"}


@admin.get("/retrain")
def retraining_status(state: Serving) -> dict[str, Any]:
    """The latest retraining: state, reasons, decision, and the tail of its log."""
    return state.jobs.status()


@admin.post("/rollback")
async def rollback(state: Serving, request: RollbackRequest | None = None) -> dict[str, Any]:
    """Move ``@champion`` back to the previous champion (or ``to``); every worker follows."""
    request = request or RollbackRequest()
    registry = _registry("rollback")
    try:
        decision, bento_tag = await asyncio.to_thread(registry.rollback, request.to, request.reason)
    except NoRegistryError:
        raise HTTPException(503, "rollback: no model registry yet; run the pipeline (make pipeline) first") from None
    except LookupError as exc:  # nothing to roll back to, or the version is champion already
        raise HTTPException(409, f"rollback refused: {exc}") from None
    except Exception as exc:
        if not _unknown_version(exc):
            raise
        raise HTTPException(409, f"rollback refused: {exc}") from None
    rollout = await asyncio.to_thread(roll_out, state.log.store, bento_tag)
    _rolled_out(rollout)
    return {"decision": decision.as_dict(), "rollout": rollout}


@admin.put("/feedback")
def correct_feedback(state: Serving, correction: FeedbackCorrection) -> FeedbackCorrected:
    """Replace recorded feedback; the old and new prices and the reason are kept in ``feedback_corrections``."""
    previous = state.log.correct_feedback(correction.request_id, correction.index, correction.actual_price_usd,
                                          correction.reason)  # fmt: skip
    if previous is None:
        raise HTTPException(404, f"request_id: no feedback for {correction.request_id!r} (index {correction.index})")
    return FeedbackCorrected(request_id=correction.request_id, index=correction.index, previous_price_usd=previous,
                             actual_price_usd=correction.actual_price_usd)  # fmt: skip


@history.get("/model/history")
def model_history(state: Serving, limit: int = Query(default=100, ge=1, le=MAX_HISTORY)) -> list[dict[str, Any]]:
    """Every promotion, refusal and rollback, newest first: versions, when, why, metrics before and after."""
    # The whole history is read at most once per view_cache_s (a reload or rollback moves the tag: a fresh read);
    # ``limit`` only slices it.
    key = ("history", state.model.info.bento_tag)
    return cast(list[dict[str, Any]], state.views.get(key, lambda: _read_history(MAX_HISTORY)))[:limit]


def warm_registry_client() -> None:
    """Make the registry client before the worker is ready, so that the first history call is as fast as the others.

    Making it takes about two seconds of CPU: done in the background, it slowed every request of a fresh worker.
    A store that cannot be read is left to the first history call, which answers 503.
    """
    try:
        ServingState.registry().client()
    except (NoProjectError, NoRegistryError):
        return
    except Exception:  # the history call reports it
        log.warning("the model registry is not readable: /model/history will answer 503", exc_info=True)


def _registry(command: str) -> ProjectRegistry:
    """The service's project registry; 503 where the service runs without its DVC project (an image)."""
    try:
        return ServingState.registry()
    except NoProjectError:
        detail = f"{command}: no DVC project (params.yaml) in the service's HOUSING_PROJECT_DIR"
        raise HTTPException(503, detail) from None


def _read_history(limit: int) -> list[dict[str, Any]]:
    registry = _registry("history")
    try:
        return registry.history(limit)
    except NoRegistryError:
        raise HTTPException(503, "history: no model registry yet; run the pipeline (make pipeline) first") from None
    except Exception:  # an unreachable or broken store (MLflow, SQLAlchemy, the driver): the reader's problem
        log.exception("history: the model registry at %s is not readable", registry.uri)
        raise HTTPException(503, "history: the model registry is not readable") from None


def _unknown_version(exc: Exception) -> bool:
    """Whether ``exc`` is MLflow's "no such version" (a rollback ``to`` a version that was never registered)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _rolled_out(rollout: dict[str, Any]) -> dict[str, Any]:
    if not rollout["switched"]:
        failed = [f"worker {w['worker']}: {w['error'] or w['bento_tag']}" for w in rollout["workers"]]
        raise HTTPException(503, f"reload: not every worker serves {rollout['bento_tag']} ({'; '.join(failed)})")
    return rollout
