"""The prediction log while PostgreSQL restarts: rows wait in the queue and are all written once it is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from devtools.local_stores import PostgresServer
from housing.log.queries import LogReader
from housing.log.schema import PREDICTIONS
from housing.log.store import PostgresStore
from housing.log.writer import PredictionLog
from tests.housing.log.rows import row


def test_a_restart_mid_load_loses_no_row(postgres: PostgresServer, tmp_path: Path) -> None:
    store = PostgresStore(postgres.new_schema(), timeout_s=1.0)
    log = PredictionLog(store, interval_s=0.01, max_retries=1, dead_letter_path=tmp_path / "dead.jsonl")
    stop, added = threading.Event(), []

    def requests() -> None:
        while not stop.is_set():
            request_id = f"r{len(added)}"
            log.add([row(request_id), row(request_id, 1)])
            added.append(request_id)
            time.sleep(0.002)

    client = threading.Thread(target=requests)
    client.start()
    try:
        time.sleep(0.5)
        postgres.stop()
        time.sleep(2.0)  # longer than the writer's retries would last if an outage used them up
        during = log.pending
        postgres.start()
        time.sleep(0.5)
    finally:
        stop.set()
        client.join()
    assert during > 0, "the writer had nothing queued while the server was down"
    assert log.flush(timeout_s=30)
    assert (log.unavailable_since, log.problem, log.dropped) == (None, None, 0)
    assert log.dead_letters == 0
    assert log.write_failures > 0
    assert store.query(f"SELECT COUNT(*), COUNT(DISTINCT request_id) FROM {PREDICTIONS}") == [  # noqa: S608
        (2 * len(added), len(added))
    ]
    log.close()
    store.close()


def test_feedback_and_reads_work_again_after_a_restart(postgres: PostgresServer, tmp_path: Path) -> None:
    store = PostgresStore(postgres.new_schema())
    log = PredictionLog(store, interval_s=0.01, dead_letter_path=tmp_path / "dead.jsonl")
    log.add([row("a")])
    assert log.flush()
    postgres.stop()
    postgres.start()
    # The pool's connections broke with the server: each is checked and replaced as it is taken.
    assert log.record_feedback("a", 0, 200_000.0, authenticated=True)
    assert LogReader(log.store).prediction("a", 0) is not None
    log.close()
    store.close()
