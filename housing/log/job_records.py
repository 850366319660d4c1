"""The retraining jobs' records in the log's store: each job's state and its own account (housing.jobs runs them).

A job writes its record as it moves on (:class:`JobRecord`); every worker and replica reads the latest
(:func:`latest_job`), so ``GET /admin/retrain`` gives one answer wherever it lands.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from housing.log.schema import JOBS
from housing.log.store import LogStore

# The record's own columns; whatever else a job says of itself is its account, kept as JSON in ``detail``.
COLUMNS = ("state", "started", "finished", "pid")

# Table and column names are the module's own; every value is a parameter.
_INSERT = f"""INSERT INTO {JOBS} (kind, state, started, finished, pid, host, detail)
              VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"""  # noqa: S608  # nosec B608
_UPDATE = f"UPDATE {JOBS} SET state = ?, finished = ?, detail = ? WHERE id = ?"  # noqa: S608  # nosec B608
_LATEST = f"SELECT * FROM {JOBS} WHERE kind = ? ORDER BY id DESC LIMIT 1"  # noqa: S608  # nosec B608


class JobRecord:
    """One running job's record in ``store``: :meth:`write` it as the job moves on.

    The first write makes the job's row (its state, start, pid and host); later ones update its state and
    account. ``status`` keys besides :data:`COLUMNS` are the account.
    """

    def __init__(self, store: LogStore, kind: str) -> None:
        self.store, self.kind = store, kind
        self.job_id: int | None = None

    def write(self, status: Mapping[str, Any]) -> None:
        detail = json.dumps({key: value for key, value in status.items() if key not in COLUMNS}, default=str)
        with self.store.transaction() as session:
            if self.job_id is None:
                args = [self.kind, status["state"], status.get("started", time.time()), status.get("finished"),
                        status.get("pid", os.getpid()), socket.gethostname(), detail]  # fmt: skip
                self.job_id = int(session.execute(_INSERT, args).fetchone()[0])
            else:
                session.execute(_UPDATE, [status["state"], status.get("finished"), detail, self.job_id])


def latest_job(store: LogStore, kind: str) -> dict[str, Any] | None:
    """The latest job of ``kind``: its state, start, end and pid with its account; None before the first."""
    rows = store.query_dicts(_LATEST, [kind])
    if not rows:
        return None
    return {**json.loads(rows[0]["detail"]), **{key: rows[0][key] for key in COLUMNS if rows[0][key] is not None}}
