"""The retraining job: one at a time, started as a process by one runner, its state in the log's store.

Retraining runs the DVC pipeline, minutes of work in its own process: ``housing retrain``
(operations.retrain). The admin endpoints (``POST /admin/retrain``, an Alertmanager webhook)
start it through :class:`JobRunner`, and the job itself records its state (running, done,
failed, with its reasons and decision) in the log's ``jobs`` table (housing.log.job_records), so every
worker and replica reads the same answer (``GET /admin/retrain``).

One job runs at a time per host: it holds a file lock beside the SQLite log (released by the
kernel if the process dies). Its output goes to a log file beside it, whose tail the status shows.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from housing.log.job_records import latest_job
from housing.log.store import LogStore

RETRAIN = "retrain"
# The command a retraining job runs: the operator CLI's own `housing retrain`.
RETRAIN_COMMAND = ("-m", "operations.cli", RETRAIN)
LOG_TAIL_LINES = 20


class AlreadyRunningError(RuntimeError):
    """Another retraining holds the lock."""


class JobRunner:
    """Start retraining jobs and read their state.

    Parameters
    ----------
    store : LogStore
        The prediction log's store, which holds the jobs' state (whoever made it closes it).
    folder : Path
        Where the lock and the job's output live: the folder of the SQLite log, on the host that runs jobs.
    """

    def __init__(self, store: LogStore, folder: Path) -> None:
        self.store = store
        self.folder = folder

    @property
    def output_path(self) -> Path:
        return self.folder / "retrain.log"

    def running(self) -> bool:
        try:
            with job_lock(self.folder):
                return False
        except AlreadyRunningError:
            return True

    def start(self, project_dir: Path, db: Path, env: Mapping[str, str], force: bool = False) -> int:
        """Start ``housing retrain`` in ``project_dir`` on the log ``db`` as a process of its own; its pid.

        Raises :class:`AlreadyRunningError` when a job runs. ``env`` is the job's whole environment (the
        caller leaves its secrets out); its output goes to :attr:`output_path`.
        """
        if self.running():
            raise AlreadyRunningError("a retraining is already running")
        argv = [sys.executable, *RETRAIN_COMMAND, *(["--force"] if force else []),
                "--project-dir", str(project_dir.resolve()), "--db", str(db.resolve())]  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("a") as output:
            process = subprocess.Popen(argv, cwd=project_dir, stdout=output, stderr=subprocess.STDOUT,  # noqa: S603 - fixed argv  # nosec B603
                                       env=dict(env), start_new_session=True)  # fmt: skip
        return process.pid

    def status(self) -> dict[str, Any]:
        """The latest job's state and account (``{"state": "never"}`` before the first), whether one runs now,
        and the tail of the job's output."""
        latest = latest_job(self.store, RETRAIN) or {"state": "never"}
        return {**latest, "running": self.running(), "log_tail": self.log_tail()}

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        if not self.output_path.exists():
            return []
        return self.output_path.read_text(errors="replace").splitlines()[-lines:]


@contextmanager
def job_lock(folder: Path) -> Iterator[None]:
    """Hold the retraining lock of ``folder`` (a job holds it while it runs), or raise :class:`AlreadyRunningError`."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "retrain.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunningError("a retraining is already running") from None
        yield
