"""The retraining job's runner and records (housing.jobs, housing.log.job_records) on each engine (``log_db``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from housing.jobs import AlreadyRunningError, JobRunner, job_lock
from housing.log.job_records import JobRecord, latest_job
from housing.log.store import migrate
from tests.stores.engines import LogDatabase


def test_a_job_records_its_state_and_account_for_every_reader(log_db: LogDatabase, tmp_path: Path) -> None:
    store = log_db.store()
    migrate(store)
    runner = JobRunner(log_db.store(), tmp_path)  # another worker's view of the same store
    assert runner.status() == {"state": "never", "running": False, "log_tail": []}
    record = JobRecord(store, "retrain")
    record.write({"state": "running", "started": 100.0, "pid": 4242, "project": "/p"})
    assert latest_job(store, "retrain") == {"state": "running", "started": 100.0, "pid": 4242, "project": "/p"}
    record.write({"state": "done", "started": 100.0, "pid": 4242, "project": "/p", "finished": 160.0,
                  "reasons": ["drift in median_income"], "decision": {"action": "promote"}})  # fmt: skip
    status = runner.status()
    assert (status["state"], status["finished"], status["reasons"]) == ("done", 160.0, ["drift in median_income"])
    assert status["decision"] == {"action": "promote"}
    assert latest_job(store, "another kind") is None
    JobRecord(store, "retrain").write({"state": "running", "started": 200.0})  # the next job is the latest
    assert runner.status()["state"] == "running"


def test_one_job_at_a_time(log_db: LogDatabase, tmp_path: Path) -> None:
    runner = JobRunner(log_db.store(), tmp_path)
    with job_lock(tmp_path):
        assert runner.running()
        with pytest.raises(AlreadyRunningError):
            runner.start(tmp_path, tmp_path / "p.db", {})
        with pytest.raises(AlreadyRunningError), job_lock(tmp_path):
            pass
    assert not runner.running()


def test_a_started_job_writes_its_output_beside_the_log(log_db: LogDatabase, tmp_path: Path) -> None:
    store = log_db.store()
    migrate(store)
    runner = JobRunner(store, tmp_path / "var")
    # A project without params.yaml: the real `housing retrain` starts, fails, and says why in its output.
    pid = runner.start(tmp_path, tmp_path / "var" / "p.db", {"PATH": str(Path(sys.executable).parent)})
    assert pid > 0
    deadline = time.monotonic() + 60
    while not any("params.yaml" in line for line in runner.log_tail()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any("params.yaml" in line for line in runner.log_tail(50)), runner.log_tail(50)
