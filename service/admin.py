"""Admin endpoints (reload, retrain, rollback) behind a bearer token, and the public promotion history.

Reload happens in process (service.reload). Retrain, rollback and history touch
MLflow and DVC, so they run the ``housing`` CLI in the project directory
(``HOUSING_PROJECT_DIR``), exactly as an operator would: the service holds no
registry client and a retraining runs outside the workers.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from typing import Any

import bentoml
from fastapi import APIRouter, Depends, Header, HTTPException, Query

from service.config import settings
from service.retrain import is_running, log_path, read_status, roll_out
from service.schemas import RetrainRequest, RollbackRequest

CLI_TIMEOUT_S = 600


def require_admin(
    authorization: str | None = Header(default=None, description="`Bearer <HOUSING_ADMIN_TOKEN>`"),
) -> None:
    """401 without a bearer token, 403 with a wrong one or when the service has none configured."""
    token = settings().admin_token
    if token is None:
        raise HTTPException(403, "admin endpoints are disabled: the service has no HOUSING_ADMIN_TOKEN")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401, "authorization: send the header 'Authorization: Bearer <admin token>'", {"WWW-Authenticate": "Bearer"}
        )
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "authorization: wrong admin token")


admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
history = APIRouter(tags=["model"])


@admin.post("/reload")
async def reload() -> dict[str, Any]:
    """Serve the BentoML store's latest model (the champion) on every worker, without a restart."""
    config = settings()
    rollout = await asyncio.to_thread(roll_out, config.prediction_db, str(bentoml.models.get(config.model_tag).tag))
    return _rolled_out(rollout)


@admin.post("/retrain", status_code=202)
def start_retraining(request: RetrainRequest | None = None) -> dict[str, Any]:
    """Start ``housing retrain`` in the background; poll ``GET /admin/retrain`` for the outcome."""
    db = settings().prediction_db
    if is_running(db):
        raise HTTPException(409, "retrain: a retraining is already running")
    args = ["retrain", "--force"] if request and request.force else ["retrain"]
    log_path(db).parent.mkdir(parents=True, exist_ok=True)
    with log_path(db).open("a") as log:
        process = subprocess.Popen(_cli(*args), cwd=settings().project_dir, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv  # nosec B603
                                   start_new_session=True)  # fmt: skip
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


@history.get("/model/history")
async def model_history(limit: int = Query(default=100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Every promotion, refusal and rollback, newest first: versions, when, why, metrics before and after."""
    code, out = await _run_cli("history", "--json", "--limit", str(limit))
    if code != 0:
        raise HTTPException(503, f"history: the model registry is not readable from {settings().project_dir}")
    return json.loads(out)


def _cli(*args: str) -> list[str]:
    """The argv of ``housing <args>`` for the project; 503 where the service runs without one (an image)."""
    config = settings()
    if not (config.project_dir / "params.yaml").is_file():
        raise HTTPException(503, f"{args[0]}: no DVC project (params.yaml) in {config.project_dir.resolve()}; "
                                 "set HOUSING_PROJECT_DIR")  # fmt: skip
    return [sys.executable, "-m", "service.cli", *args, "--project-dir", str(config.project_dir.resolve()),
            "--db", str(config.prediction_db.resolve())]  # fmt: skip


async def _run_cli(*args: str) -> tuple[int, str]:
    """Run the CLI; (exit code, stdout), or (exit code, the end of stderr) when it failed."""
    process = await asyncio.create_subprocess_exec(
        *_cli(*args), cwd=settings().project_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    code = process.returncode or 0
    return code, out.decode() if code == 0 or out.strip() else err.decode()[-2000:]


def _rolled_out(rollout: dict[str, Any]) -> dict[str, Any]:
    if not rollout["switched"]:
        failed = [f"worker {w['worker']}: {w['error'] or w['bento_tag']}" for w in rollout["workers"]]
        raise HTTPException(503, f"reload: not every worker serves {rollout['bento_tag']} ({'; '.join(failed)})")
    return rollout
