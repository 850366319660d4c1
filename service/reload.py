"""Switching every worker to a new model without a restart.

A reload is a row in the ``model_requests`` table of the service's SQLite file
(the one the prediction log uses, so every worker and the ``housing`` CLI see
it). Each worker's watcher thread polls that table, loads the requested model
beside the one it serves, swaps them between two requests, and reports what it
serves in ``workers``, its heartbeat. Whoever asked can wait on those reports
until every live worker has switched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from housing.settings import settings
from service.prediction_log import connection

log = logging.getLogger(__name__)

REQUESTS = "model_requests"
WORKERS = "workers"


def create_tables(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with connection(path) as db:
        db.enable_wal()
        db.table(REQUESTS).create({"id": int, "ts": float, "bento_tag": str}, pk="id", if_not_exists=True)
        db.table(WORKERS).create(
            {"worker": int, "pid": int, "bento_tag": str, "loaded_ts": float, "seen_ts": float, "error": str},
            pk="worker",
            if_not_exists=True,
        )


def request_model(path: Path, bento_tag: str) -> float:
    """Ask every worker to serve ``bento_tag``; returns the request's time."""
    create_tables(path)
    now = time.time()
    with connection(path) as db, db.conn:
        db.table(REQUESTS).insert({"ts": now, "bento_tag": bento_tag})
    return now


def live_workers(path: Path, max_age_s: float) -> list[dict[str, Any]]:
    """Workers that reported within ``max_age_s``, with the model each serves (tables made by request_model)."""
    with connection(path) as db:
        return list(db[WORKERS].rows_where("seen_ts >= ?", [time.time() - max_age_s], order_by="worker"))


def wait_for_workers(path: Path, bento_tag: str, timeout_s: float, max_age_s: float) -> tuple[bool, list[dict]]:
    """Wait until every live worker serves ``bento_tag``; (all switched, the workers' last reports).

    Returns at once when no worker is running (a starting service loads the store's latest
    model anyway), and early, unswitched, when a worker reports it could not load the model.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        workers = live_workers(path, max_age_s)
        done = bool(workers) and all(worker["bento_tag"] == bento_tag for worker in workers)
        failed = any(worker["error"].startswith(f"{bento_tag}:") for worker in workers)
        if not workers or done or failed or time.monotonic() >= deadline:
            return done, workers
        time.sleep(0.2)


@dataclass
class Watcher:
    """One worker's thread that follows reload requests and reports what the worker serves."""

    path: Path
    worker: int
    serving: Callable[[], str]
    switch: Callable[[str], None]
    poll_s: float

    def start(self) -> None:
        create_tables(self.path)
        # Requests older than this worker were made before it loaded the store's latest model.
        self._since = time.time()
        self._error = ""
        self._report(loaded=True)
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="model-watcher", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._follow()
            except Exception:  # the watcher must outlive a bad model or a locked file
                log.exception("model watcher: poll failed")

    def _follow(self) -> None:
        with connection(self.path) as db:
            rows = list(db[REQUESTS].rows_where("ts > ?", [self._since], order_by="id DESC", limit=1))
        wanted = rows[0]["bento_tag"] if rows else None
        loaded = False
        if wanted and wanted != self.serving():
            try:
                self.switch(wanted)
                self._error, loaded = "", True
            except Exception as exc:  # keep serving the old model; the error is reported to whoever waits
                log.exception("model watcher: cannot switch to %s", wanted)
                self._error = f"{wanted}: {type(exc).__name__}: {exc}"
            self._since = rows[0]["ts"]
        self._report(loaded)

    def _report(self, loaded: bool) -> None:
        now = time.time()
        row = {"worker": self.worker, "pid": os.getpid(), "bento_tag": self.serving(), "seen_ts": now,
               "error": self._error}  # fmt: skip
        if loaded:
            row["loaded_ts"] = now
        with connection(self.path) as db, db.conn:
            db.table(WORKERS).upsert(row, pk="worker")


def roll_out(db: Path, bento_tag: str) -> dict[str, Any]:
    """Ask the running service's workers to serve ``bento_tag`` and wait for them to switch."""
    config = settings()
    request_model(db, bento_tag)
    switched, workers = wait_for_workers(db, bento_tag, config.reload_timeout_s, config.worker_max_age_s)
    return {"bento_tag": bento_tag, "switched": switched, "workers": workers}
