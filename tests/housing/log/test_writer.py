"""The log's writer on each engine (``log_db``: SQLite, then PostgreSQL): batches, feedback, retries, dead letters,
reused ids and retention."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from housing.log import writer
from housing.log.queries import LogReader
from housing.log.schema import CORRECTIONS, FEEDBACK, PREDICTIONS
from housing.log.writer import PredictionLog, RequestRows
from service.api_models import EXAMPLE_HOUSE
from tests.housing.log.rows import give_feedback, row
from tests.stores.engines import LogDatabase


def test_rows_are_written_in_batches_and_read_back(log_db: LogDatabase) -> None:
    log = log_db.log(batch_size=50, interval_s=0.01)
    for i in range(300):
        log.add([row(f"r{i}")])
    assert log.flush()
    assert log_db.count(PREDICTIONS) == 300
    assert LogReader(log.store).prediction("r17", 0)["price_usd"] == 123456.0
    assert LogReader(log.store).prediction("r17", 1) is None
    assert log.pending == 0
    log.close()


def test_missing_bedrooms_are_stored_as_null(log_db: LogDatabase) -> None:
    log = log_db.log()
    log.add([{**row("a"), "total_bedrooms": None}])
    log.close()
    assert log.store.query("SELECT total_bedrooms FROM predictions") == [(None,)]


def test_close_flushes_everything_queued(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=1.0)
    log.add([row(f"r{i}", i) for i in range(1000)])
    log.close()
    assert log_db.count(PREDICTIONS) == 1000


def columnar(request_id: str, houses: int) -> tuple[RequestRows, list[dict]]:
    """A request's rows as the service queues them (columns) and the same rows as dicts."""
    shared = {"request_id": request_id, "endpoint": "predict_batch", "ts": 1.0, "model_version": "7", "latency_ms": 9.5}
    columns = {
        "idx": range(houses),
        "price_usd": [100_000.0 + i for i in range(houses)],
        "lower_usd": [None] * houses,
        **{name: [value] * houses for name, value in EXAMPLE_HOUSE.items()},
    }
    return RequestRows(columns, shared), [{**row(request_id, i), **shared, "price_usd": 100_000.0 + i,
                                           "lower_usd": None} for i in range(houses)]  # fmt: skip


def test_columnar_rows_read_as_the_rows_they_stand_for() -> None:
    rows, dicts = columnar("c", 3)
    assert len(rows) == 3
    assert list(rows) == dicts
    assert [rows[0], rows[-1]] == [dicts[0], dicts[-1]]
    assert rows[1:] == dicts[1:]
    assert list(writer.row_values(rows, ["idx", "request_id", "upper_usd"])) == [
        (0, "c", None), (1, "c", None), (2, "c", None)]  # fmt: skip
    with pytest.raises(ValueError, match="one length"):
        RequestRows({"idx": range(2), "price_usd": [1.0]}, {})


def test_columnar_rows_are_stored_as_their_rows_would_be(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    columns, dicts = columnar("as-columns", 4)
    log.add(columns)
    log.add([{**one, "request_id": "as-dicts"} for one in dicts])
    log.add(columnar("as-columns", 2)[0])  # a reused id is renamed, as for dicts
    assert log.flush()
    log.close()
    stored = log.store.query_dicts("SELECT * FROM predictions ORDER BY id")
    assert len(stored) == 10
    by_request: dict[str, list[dict]] = {}
    for one in stored:
        one.pop("id")
        by_request.setdefault(one.pop("request_id").split("~")[0], []).append(one)
    assert by_request["as-columns"][:4] == by_request["as-dicts"]
    assert by_request["as-columns"][4:] == by_request["as-dicts"][:2]


def test_the_first_feedback_is_kept_and_a_correction_is_on_record(log_db: LogDatabase) -> None:
    log = log_db.log()
    assert log.record_feedback("x", 0, 100_000.0, authenticated=True)
    assert not log.record_feedback("x", 0, 10_000_000.0, authenticated=True)
    assert log.correct_feedback("x", 0, 120_000.0, reason="typo") == 100_000.0
    assert log.correct_feedback("y", 0, 1.0, reason="none there") is None
    log.close()
    assert log.store.query(f"SELECT actual_price_usd FROM {FEEDBACK}") == [(120_000.0,)]  # noqa: S608
    corrections = f"SELECT request_id, previous_price_usd, actual_price_usd, reason FROM {CORRECTIONS}"  # noqa: S608
    assert log.store.query(corrections) == [("x", 100_000.0, 120_000.0, "typo")]


def test_a_failed_write_is_retried_not_dropped(log_db: LogDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    real_insert = writer._insert
    failures = iter([True, True, False])
    log = log_db.log()

    def flaky(session, table, rows):
        if next(failures, False):
            raise log.store.error("disk I/O error")
        real_insert(session, table, rows)

    monkeypatch.setattr(writer, "_insert", flaky)
    log.add([row("kept")])
    assert log.flush(timeout_s=10)
    assert log.write_failures == 2
    assert log_db.count(PREDICTIONS) == 1
    log.close()


def test_duplicate_rows_are_refused(log_db: LogDatabase) -> None:
    # (request_id, idx) is unique: a row can never be logged twice.
    log = log_db.log()
    log.add([row("dup")])
    log.flush()
    with pytest.raises(log.store.integrity_error), log.store.transaction() as session:
        writer._insert(session, PREDICTIONS, [[row("dup")]])
    log.close()


def test_two_processes_worth_of_writers_share_one_database(log_db: LogDatabase) -> None:
    logs = [log_db.log(batch_size=10, interval_s=0.001) for _ in range(2)]

    def write(log: PredictionLog, prefix: str) -> None:
        for i in range(200):
            log.add([row(f"{prefix}{i}")])

    threads = [threading.Thread(target=write, args=(log, f"w{n}-")) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert log_db.count(PREDICTIONS) == 400


def test_a_reused_request_id_keeps_its_rows_under_a_fresh_id(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    log.add([row("dup")])
    assert log.flush()
    # Again in a later batch, twice within one batch, and beside a request that is fine.
    log.add([row("dup"), row("dup", 1)])
    log.add([row("dup")])
    log.add([row("fresh")])
    assert log.flush()
    log.close()
    ids = [rid for (rid,) in log.store.query("SELECT request_id FROM predictions ORDER BY id")]
    assert len(ids) == 5
    assert ids[0] == "dup"
    assert "fresh" in ids
    renamed = [rid for rid in ids if rid.startswith("dup~")]
    assert len(renamed) == 3
    assert len(set(renamed)) == 2  # the two rows of one request share their new id
    assert all(len(rid) == len("dup~") + 8 for rid in renamed)
    assert log.write_failures == 0


def test_a_write_that_keeps_failing_goes_to_the_dead_letter_file(
    log_db: LogDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = log_db.log(interval_s=0.01, max_retries=2)

    def broken(session, table, rows):
        raise log.store.error("disk I/O error")

    monkeypatch.setattr(writer, "_insert", broken)
    log.add([row("a"), row("a", 1)])
    assert log.flush(timeout_s=10)
    monkeypatch.undo()
    log.add([row("b")])  # the writer goes on with the next rows
    assert log.flush(timeout_s=10)
    log.close()
    assert log.write_failures == 3
    assert log.dead_letters == 2
    kept = [json.loads(line) for line in log.dead_letter_path.read_text().splitlines()]
    assert [(item["table"], [r["idx"] for r in item["rows"]]) for item in kept] == [(PREDICTIONS, [0, 1])]
    assert log_db.count(PREDICTIONS) == 1


def test_pruning_deletes_old_predictions_but_keeps_those_with_feedback(log_db: LogDatabase) -> None:
    now = 1_000_000.0
    log = log_db.log(interval_s=0.01, retention_s=3600.0, prune_interval_s=3600.0, prune_chunk=7)
    log.add([{**row(f"old{i}"), "ts": now - 7200} for i in range(20)])
    log.add([{**row(f"new{i}"), "ts": now - 60} for i in range(5)])
    give_feedback(log, [("old0", 0, 1.0), ("old1", 0, 2.0)])
    log.record_feedback("old2", 0, 3.0, authenticated=False)  # any feedback keeps its prediction
    assert log.prune(now) == 17  # in chunks of 7: 7, 7, 3
    kept = {request_id for (request_id,) in log.store.query("SELECT request_id FROM predictions")}
    assert kept == {"old0", "old1", "old2"} | {f"new{i}" for i in range(5)}
    assert [r["n"] for r in LogReader(log.store).accuracy()] == [2]  # the labels are still there to train on
    hours = LogReader(log.store).traffic(now, 3600, 3)  # covers the old request's hour too
    assert (sum(h["requests"] for h in hours), sum(h["houses"] for h in hours)) == (1, 5)
    assert log.prune(now) == 0
    log.close()


def test_the_pruner_runs_in_the_background(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01, retention_s=60.0, prune_interval_s=0.05)
    log.add([{**row(f"old{i}"), "ts": time.time() - 3600} for i in range(10)])
    log.add([row("new") | {"ts": time.time()}])
    assert log.flush()
    deadline = time.monotonic() + 10
    while log_db.count(PREDICTIONS) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log_db.count(PREDICTIONS) == 1
    assert log.pruned == 10
    log.close()


def test_without_retention_nothing_is_pruned(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    log.add([{**row("ancient"), "ts": 1.0}])
    assert log.flush()
    assert log.prune() == 0
    assert log_db.count(PREDICTIONS) == 1
    log.close()


def test_while_the_store_cannot_take_rows_they_wait_up_to_the_bound_then_are_dropped_and_counted(
    log_db: LogDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 5 * (writer.REQUEST_BYTES + writer.ROW_BYTES)  # five one-house requests
    log = log_db.log(interval_s=0.01, max_retries=0, max_queued_bytes=bound)
    real_insert = writer._insert

    def full(session, table, rows):
        raise log.store.error("database or disk is full")

    monkeypatch.setattr(writer, "_insert", full)
    monkeypatch.setattr(log.store, "unavailable", lambda exc: "disk full")
    accepted = [log.add([row(f"r{i}")]) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    deadline = time.monotonic() + 10
    while log.unavailable_since is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (log.unavailable_reason, log.dropped, log.dead_letters) == ("disk full", 3, 0)
    assert not log.accepting
    for part in ("disk full", "5 requests wait in memory", "3 rows dropped"):
        assert part in log.problem
    monkeypatch.setattr(writer, "_insert", real_insert)  # space is back
    assert log.flush(timeout_s=10)
    assert (log.unavailable_since, log.problem, log.queued_bytes) == (None, None, 0)
    assert log.accepting
    assert log_db.count(PREDICTIONS) == 5  # every accepted row, none of the dropped ones
    log.close()


def test_rows_the_dead_letter_file_cannot_take_are_counted_as_dropped(
    log_db: LogDatabase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = log_db.log(interval_s=0.01, max_retries=0)
    log.dead_letter_path = tmp_path / "not-a-folder" / "dead.jsonl"
    (tmp_path / "not-a-folder").write_text("a file where the folder should be")

    def broken(session, table, rows):
        raise log.store.error("a bad row")

    monkeypatch.setattr(writer, "_insert", broken)
    log.add([row("a"), row("a", 1)])
    assert log.flush(timeout_s=10)
    assert (log.dead_letters, log.dropped) == (2, 2)
    log.close()
