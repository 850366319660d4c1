"""Switching every worker of a replica to a new model without a restart.

A reload is a row in the log store's ``model_requests`` table (housing.log.store:
the SQLite file of the prediction log, or the shared PostgreSQL database), so every
worker and the ``housing`` CLI see it. A request names its replica (one BentoML
store: a host and its ``BENTOML_HOME``), because a bento tag names a model within
one store. Each worker's watcher thread polls the table, loads the requested
model beside the one it serves, swaps them between two requests, and reports what
it serves in ``workers``, its heartbeat. Whoever asked can wait on those reports
until every live worker of the replica has switched: the admin endpoints, the CLI and the retraining job
all roll out through :func:`roll_out`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from housing.log.schema import RELOAD_REQUESTS, WORKERS
from housing.log.store import LogStore, migrate, open_store
from housing.settings import settings

log = logging.getLogger(__name__)

_LATEST_REQUEST = f"SELECT ts, bento_tag FROM {RELOAD_REQUESTS} WHERE replica = ? AND ts > ? ORDER BY id DESC LIMIT 1"  # noqa: S608  # nosec B608
_LIVE = f"SELECT * FROM {WORKERS} WHERE replica = ? AND seen_ts >= ? ORDER BY worker"  # noqa: S608  # nosec B608
_REPORT = f"""INSERT INTO {WORKERS} (worker, replica, pid, bento_tag, loaded_ts, seen_ts, error)
              VALUES (?, ?, ?, ?, ?, ?, ?)
              ON CONFLICT (worker) DO UPDATE SET pid = excluded.pid, bento_tag = excluded.bento_tag,
                  loaded_ts = COALESCE(excluded.loaded_ts, {WORKERS}.loaded_ts), seen_ts = excluded.seen_ts,
                  error = excluded.error"""  # noqa: S608  # nosec B608


def this_replica() -> str:
    """This process's replica: its host and BentoML store."""
    home = Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser().resolve()
    return f"{socket.gethostname()}:{home}"


def request_model(store: LogStore, bento_tag: str, replica: str) -> float:
    """Ask every worker of ``replica`` to serve ``bento_tag``; returns the request's time."""
    now = time.time()
    with store.transaction() as session:
        session.execute(f"INSERT INTO {RELOAD_REQUESTS} (ts, replica, bento_tag) VALUES (?, ?, ?)",  # noqa: S608  # nosec B608
                        [now, replica, bento_tag])  # fmt: skip
    return now


def live_workers(store: LogStore, replica: str, max_age_s: float) -> list[dict[str, Any]]:
    """The replica's workers that reported within ``max_age_s``, with the model each serves."""
    return store.query_dicts(_LIVE, [replica, time.time() - max_age_s])


def wait_for_workers(
    store: LogStore, replica: str, bento_tag: str, timeout_s: float, max_age_s: float
) -> tuple[bool, list[dict[str, Any]]]:
    """Wait until every live worker of ``replica`` serves ``bento_tag``; (all switched, the workers' last reports).

    Returns at once when no worker is running (a starting service loads the store's latest
    model anyway), and early, unswitched, when a worker reports it could not load the model.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        workers = live_workers(store, replica, max_age_s)
        done = bool(workers) and all(worker["bento_tag"] == bento_tag for worker in workers)
        failed = any(worker["error"].startswith(f"{bento_tag}:") for worker in workers)
        if not workers or done or failed or time.monotonic() >= deadline:
            return done, workers
        time.sleep(0.2)


@dataclass
class Watcher:
    """What one worker does to follow reload requests: :meth:`poll` (every ``reload_poll_s``, on the worker's
    background thread) switches to the newest requested model and reports what the worker serves."""

    store: LogStore
    replica: str
    worker: str
    serving: Callable[[], str]
    switch: Callable[[str], None]

    def __post_init__(self) -> None:
        # Requests older than this worker were made before it loaded the store's latest model.
        self._since = time.time()
        self._error = ""
        self.note = ""
        self._report(loaded=True)

    def set_note(self, note: str) -> None:
        """Report ``note`` (another source's error, such as the champion follower's; empty: none) from now on."""
        self.note = note

    def poll(self) -> None:
        """Serve the newest model asked of this replica since the last poll, and report (the heartbeat)."""
        rows = self.store.query(_LATEST_REQUEST, [self.replica, self._since])
        wanted = rows[0][1] if rows else None
        loaded = False
        if wanted and wanted != self.serving():
            try:
                self.switch(wanted)
                self._error, loaded = "", True
            except Exception as exc:  # keep serving the old model; the error is reported to whoever waits
                log.exception("model watcher: cannot switch to %s", wanted)
                self._error = f"{wanted}: {type(exc).__name__}: {exc}"
            self._since = rows[0][0]
        self._report(loaded)

    def _report(self, loaded: bool) -> None:
        now = time.time()
        with self.store.transaction() as session:
            session.execute(_REPORT, [self.worker, self.replica, os.getpid(), self.serving(),
                                      now if loaded else None, now, self._error or self.note])  # fmt: skip


def roll_out(store: LogStore, bento_tag: str, replica: str | None = None) -> dict[str, Any]:
    """Ask the running service's workers (of this replica) to serve ``bento_tag`` and wait for them to switch."""
    config, replica = settings(), replica or this_replica()
    request_model(store, bento_tag, replica)
    switched, workers = wait_for_workers(store, replica, bento_tag, config.reload_timeout_s, config.worker_max_age_s)
    return {"bento_tag": bento_tag, "switched": switched, "workers": workers}


def roll_out_from(db: Path, bento_tag: str) -> dict[str, Any]:
    """:func:`roll_out` from outside the service (the CLI, the retraining job): through the store the settings
    name (or the SQLite file ``db``)."""
    store = open_store(settings().model_copy(update={"prediction_db": db}))
    try:
        migrate(store)
        return roll_out(store, bento_tag)
    finally:
        store.close()
