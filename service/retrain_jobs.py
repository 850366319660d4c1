"""The retraining job as the service sees it: one at a time (a lock), its status file and its log.

``housing retrain`` (operations.retrain) takes the lock and writes the status;
``POST /admin/retrain`` starts it as a process and ``GET /admin/retrain`` reads
both, all beside the prediction log so that every worker sees the same job.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


def write_status(db: Path, status: dict[str, Any]) -> None:
    path = status_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
    tmp.replace(path)
