"""Switching every worker of a replica to a new model without a restart.

A reload is a row in the log store's ``model_requests`` table (housing.log.store:
the SQLite file of the prediction log, or the shared PostgreSQL database), so every
worker and the ``housing`` CLI see it. A request names its replica (one BentoML
model store: a host and ``$BENTOML_HOME/models``), because a bento tag names a model within
one store. Each worker's watcher thread polls the table, loads the requested
model beside the one it serves, swaps them between two requests, and reports what
it serves in ``workers``, its heartbeat. Whoever asked can wait on those reports
until every live worker of the replica has switched: the admin endpoints, the CLI and the retraining job
all roll out through :func:`roll_out`.

A challenger in shadow (housing.shadow) takes the same path with the role ``challenger``: a worker with a
:class:`Shadow` loads the replica's latest challenger request (whenever it was made: a worker that starts
during a shadow joins it; an empty tag ends it) beside its champion, and reports the challenger it prices.
A challenger that does not load leaves the champion untouched; its error is on the worker's report
(``/health``) and the load is tried again ``retry_s`` later.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from housing.log.schema import RELOAD_REQUESTS, WORKERS
from housing.log.store import LogStore, migrate, open_store
from housing.settings import settings

log = logging.getLogger(__name__)

# The roles a reload request names: the model that answers, and the one that prices in its shadow.
CHAMPION, CHALLENGER = "champion", "challenger"
# What a replica without a challenger asks: no tag, every request (the fraction of a shadow that does not run).
NO_CHALLENGER = ("", 1.0)

_REQUEST = f"INSERT INTO {RELOAD_REQUESTS} (ts, replica, bento_tag, role, fraction) VALUES (?, ?, ?, ?, ?)"  # noqa: S608  # nosec B608
_LATEST_REQUEST = f"""SELECT ts, bento_tag FROM {RELOAD_REQUESTS} WHERE replica = ? AND role = ? AND ts > ?
                      ORDER BY id DESC LIMIT 1"""  # noqa: S608  # nosec B608
_LATEST_CHALLENGER = f"""SELECT bento_tag, fraction FROM {RELOAD_REQUESTS} WHERE replica = ? AND role = ?
                         ORDER BY id DESC LIMIT 1"""  # noqa: S608  # nosec B608
_LIVE = f"SELECT * FROM {WORKERS} WHERE replica = ? AND seen_ts >= ? ORDER BY worker"  # noqa: S608  # nosec B608
_REPORT = f"""INSERT INTO {WORKERS} (worker, replica, pid, bento_tag, loaded_ts, seen_ts, error, challenger)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?)
              ON CONFLICT (worker) DO UPDATE SET pid = excluded.pid, bento_tag = excluded.bento_tag,
                  loaded_ts = COALESCE(excluded.loaded_ts, {WORKERS}.loaded_ts), seen_ts = excluded.seen_ts,
                  error = excluded.error, challenger = excluded.challenger"""  # noqa: S608  # nosec B608


def this_replica() -> str:
    """This process's replica: its host and BentoML model store.

    The store, not the home: two homes whose ``models`` link to one store (a server's own home beside the CLI's)
    name one replica, because a bento tag names the same model in both.
    """
    home = Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser()
    return f"{socket.gethostname()}:{(home / 'models').resolve()}"


def request_model(
    store: LogStore, bento_tag: str, replica: str, role: str = CHAMPION, fraction: float | None = None
) -> float:
    """Ask every worker of ``replica`` to serve ``bento_tag`` as ``role`` (a challenger prices ``fraction`` of the
    requests in shadow; its empty tag ends the shadow); returns the request's time."""
    now = time.time()
    with store.transaction() as session:
        session.execute(_REQUEST, [now, replica, bento_tag, role, fraction])
    return now


def asked_challenger(store: LogStore, replica: str) -> tuple[str, float]:
    """The challenger ``replica`` was last asked to price in shadow and the share of requests: :data:`NO_CHALLENGER`
    when none was, or the shadow ended."""
    rows = store.query(_LATEST_CHALLENGER, [replica, CHALLENGER])
    if not rows or not rows[0][0]:
        return NO_CHALLENGER
    tag, fraction = rows[0]
    return str(tag), 1.0 if fraction is None else float(fraction)


def live_workers(store: LogStore, replica: str, max_age_s: float) -> list[dict[str, Any]]:
    """The replica's workers that reported within ``max_age_s``, with the model each serves."""
    return store.query_dicts(_LIVE, [replica, time.time() - max_age_s])


def wait_for_workers(
    store: LogStore, replica: str, bento_tag: str, timeout_s: float, max_age_s: float, role: str = CHAMPION
) -> tuple[bool, list[dict[str, Any]]]:
    """Wait until every live worker of ``replica`` serves ``bento_tag`` as ``role``; (all switched, the workers' last
    reports).

    Returns at once when no worker is running (a starting service loads the store's latest
    model anyway), and early, unswitched, when a worker reports it could not load the model.
    """
    deadline = time.monotonic() + timeout_s
    column, failure = ("bento_tag", f"{bento_tag}:") if role == CHAMPION else ("challenger", _shadow_error(bento_tag))
    while True:
        workers = live_workers(store, replica, max_age_s)
        done = bool(workers) and all(worker[column] == bento_tag for worker in workers)
        failed = bool(bento_tag) and any(failure in worker["error"] for worker in workers)
        if not workers or done or failed or time.monotonic() >= deadline:
            return done, workers
        time.sleep(0.2)


def _shadow_error(bento_tag: str) -> str:
    """How a worker's report begins the error of a challenger that did not load."""
    return f"challenger {bento_tag}:"


class Shadow(Protocol):
    """A worker's challenger: what it prices in shadow, and how it switches (housing.shadow; service.shadow)."""

    def serving(self) -> tuple[str, float]:
        """The challenger's bento tag ("" for none) and the share of requests it prices."""

    def switch(self, bento_tag: str, fraction: float) -> None:
        """Price ``fraction`` of the requests with ``bento_tag`` from now on ("": stop); raises if it cannot load."""


@dataclass
class Watcher:
    """What one worker does to follow reload requests: :meth:`poll` (every ``reload_poll_s``, on the worker's
    background thread) switches to the newest requested model (and, with a ``shadow``, challenger) and reports what
    the worker serves."""

    store: LogStore
    replica: str
    worker: str
    serving: Callable[[], str]
    switch: Callable[[str], None]
    shadow: Shadow | None = None
    # How long a challenger that did not load waits before it is tried again.
    retry_s: float = 10.0

    def __post_init__(self) -> None:
        # Requests older than this worker were made before it loaded the store's latest model.
        self._since = time.time()
        self._error = self._shadow_error = ""
        # The challenger that last failed to load, and when it may be tried again (another one is tried at once).
        self._shadow_failed: tuple[str, float] | None = None
        self._shadow_retry = 0.0
        self.note = ""
        self._report(loaded=True)

    def set_note(self, note: str) -> None:
        """Report ``note`` (another source's error, such as the champion follower's; empty: none) from now on."""
        self.note = note

    def poll(self) -> None:
        """Serve the newest model asked of this replica since the last poll, and report (the heartbeat)."""
        rows = self.store.query(_LATEST_REQUEST, [self.replica, CHAMPION, self._since])
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
        if self.shadow is not None:
            self._follow_shadow(self.shadow)
        self._report(loaded)

    def _follow_shadow(self, shadow: Shadow) -> None:
        """Price in shadow with the challenger the replica was last asked for; one that does not load is retried
        ``retry_s`` later, the champion untouched meanwhile."""
        wanted = asked_challenger(self.store, self.replica)
        if wanted == shadow.serving():
            self._shadow_error = ""
            return
        if wanted == self._shadow_failed and time.monotonic() < self._shadow_retry:
            return
        try:
            shadow.switch(*wanted)
            self._shadow_error, self._shadow_failed = "", None
        except Exception as exc:  # the champion serves on; the report says why the challenger does not
            log.exception("model watcher: cannot load the challenger %s", wanted[0])
            self._shadow_error = f"{_shadow_error(wanted[0])} {type(exc).__name__}: {exc}"
            self._shadow_failed, self._shadow_retry = wanted, time.monotonic() + self.retry_s

    def _report(self, loaded: bool) -> None:
        now = time.time()
        error = "; ".join(filter(None, [self._error, self._shadow_error, self.note]))
        challenger = "" if self.shadow is None else self.shadow.serving()[0]
        with self.store.transaction() as session:
            session.execute(_REPORT, [self.worker, self.replica, os.getpid(), self.serving(),
                                      now if loaded else None, now, error, challenger])  # fmt: skip


def roll_out(
    store: LogStore, bento_tag: str, replica: str | None = None, role: str = CHAMPION, fraction: float | None = None
) -> dict[str, Any]:
    """Ask the running service's workers (of this replica) to serve ``bento_tag`` as ``role`` and wait for them to
    switch."""
    config, replica = settings(), replica or this_replica()
    request_model(store, bento_tag, replica, role, fraction)
    switched, workers = wait_for_workers(store, replica, bento_tag, config.reload_timeout_s, config.worker_max_age_s,
                                         role)  # fmt: skip
    return {"bento_tag": bento_tag, "switched": switched, "workers": workers}


def roll_out_from(db: Path, bento_tag: str, role: str = CHAMPION, fraction: float | None = None) -> dict[str, Any]:
    """:func:`roll_out` from outside the service (the CLI, the retraining job): through the store the settings
    name (or the SQLite file ``db``)."""
    store = open_store(settings().model_copy(update={"prediction_db": db}))
    try:
        migrate(store)
        return roll_out(store, bento_tag, role=role, fraction=fraction)
    finally:
        store.close()
