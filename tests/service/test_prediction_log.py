from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from service import prediction_log
from service.prediction_log import FEEDBACK, PREDICTIONS, PredictionLog
from service.schemas import EXAMPLE_HOUSE


def row(request_id: str, idx: int = 0) -> dict:
    return {"request_id": request_id, "idx": idx, "endpoint": "predict", "ts": 1.0, "model_version": "7",
            "latency_ms": 2.5, "price_usd": 123456.0, **EXAMPLE_HOUSE}  # fmt: skip


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 - test constant


def test_rows_are_written_in_batches_and_read_back(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", batch_size=50, interval_s=0.01)
    for i in range(300):
        log.add(PREDICTIONS, [row(f"r{i}")])
    assert log.flush()
    assert count(tmp_path / "p.db", PREDICTIONS) == 300
    assert log.prediction("r17", 0)["price_usd"] == 123456.0
    assert log.prediction("r17", 1) is None
    assert log.pending == 0
    log.close()


def test_missing_bedrooms_are_stored_as_null(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    log.add(PREDICTIONS, [{**row("a"), "total_bedrooms": None}])
    log.close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("SELECT total_bedrooms FROM predictions").fetchone() == (None,)


def test_close_flushes_everything_queued(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", interval_s=1.0)
    log.add(PREDICTIONS, [row(f"r{i}", i) for i in range(1000)])
    log.close()
    assert count(tmp_path / "p.db", PREDICTIONS) == 1000


def test_feedback_latest_value_wins(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    for price in (1.0, 2.0):
        log.add(FEEDBACK, [{"request_id": "x", "idx": 0, "ts": 1.0, "actual_price_usd": price}])
        log.flush()
    log.close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert conn.execute("SELECT actual_price_usd FROM feedback").fetchall() == [(2.0,)]


def test_a_failed_write_is_retried_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_insert = prediction_log._insert
    failures = iter([True, True, False])

    def flaky(db, table, rows):
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        real_insert(db, table, rows)

    monkeypatch.setattr(prediction_log, "_insert", flaky)
    log = PredictionLog(tmp_path / "p.db")
    log.add(PREDICTIONS, [row("kept")])
    assert log.flush(timeout_s=10)
    assert log.write_failures == 2
    assert count(tmp_path / "p.db", PREDICTIONS) == 1
    log.close()


def test_duplicate_rows_are_refused(tmp_path: Path) -> None:
    # (request_id, idx) is unique: a row can never be logged twice.
    log = PredictionLog(tmp_path / "p.db")
    log.add(PREDICTIONS, [row("dup")])
    log.flush()
    db = prediction_log.connect(tmp_path / "p.db")
    with pytest.raises(sqlite3.IntegrityError):
        prediction_log._insert(db, PREDICTIONS, [row("dup")])
    log.close()


def test_two_processes_worth_of_writers_share_one_file(tmp_path: Path) -> None:
    logs = [PredictionLog(tmp_path / "p.db", batch_size=10, interval_s=0.001) for _ in range(2)]

    def write(log: PredictionLog, prefix: str) -> None:
        for i in range(200):
            log.add(PREDICTIONS, [row(f"{prefix}{i}")])

    threads = [threading.Thread(target=write, args=(log, f"w{n}-")) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert count(tmp_path / "p.db", PREDICTIONS) == 400


def test_accuracy_per_model_version_and_over_time(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    predictions = [
        {**row("a"), "model_version": "1", "ts": 100.0, "price_usd": 100_000.0},
        {**row("b"), "model_version": "1", "ts": 200.0, "price_usd": 200_000.0},
        {**row("c"), "model_version": "2", "ts": 3700.0, "price_usd": 300_000.0},
        {**row("d"), "model_version": "2", "ts": 3800.0, "price_usd": 50_000.0},  # no feedback: not counted
    ]
    log.add(PREDICTIONS, predictions)
    log.add(FEEDBACK, [{"request_id": r, "idx": 0, "ts": 1.0, "actual_price_usd": p}
                       for r, p in [("a", 110_000.0), ("b", 170_000.0), ("c", 300_000.0)]])  # fmt: skip
    log.flush()
    overall = {r["model_version"]: r for r in log.accuracy()}
    assert overall["1"]["n"] == 2
    assert overall["1"]["mae"] == pytest.approx(20_000.0)
    assert overall["1"]["rmse"] == pytest.approx((10_000.0**2 / 2 + 30_000.0**2 / 2) ** 0.5)
    assert overall["2"]["n"] == 1
    assert overall["2"]["mae"] == 0.0
    hourly = log.accuracy(bucket_s=3600)
    assert [(r["bucket_start"], r["model_version"], r["n"]) for r in hourly] == [(0.0, "1", 2), (3600.0, "2", 1)]
    assert [r["model_version"] for r in log.accuracy(since_ts=1000)] == ["2"]
    log.close()
