"""The prediction log's reads on each engine (``log_db``: SQLite, then PostgreSQL): accuracy, traffic, recent houses,
the labelled houses for training and a report's window."""

from __future__ import annotations

import pytest

from housing.log.queries import LogReader
from housing.log.schema import MIGRATIONS
from tests.housing.log.rows import give_feedback, row
from tests.stores.engines import LogDatabase


def test_accuracy_per_model_version_and_over_time(log_db: LogDatabase) -> None:
    log = log_db.log()
    predictions = [
        {**row("a"), "model_version": "1", "ts": 100.0, "price_usd": 100_000.0},
        {**row("b"), "model_version": "1", "ts": 200.0, "price_usd": 200_000.0},
        {**row("c"), "model_version": "2", "ts": 3700.0, "price_usd": 300_000.0},
        {**row("d"), "model_version": "2", "ts": 3800.0, "price_usd": 50_000.0},  # no feedback: not counted
    ]
    log.add(predictions)
    give_feedback(log, [("a", 0, 110_000.0), ("b", 0, 170_000.0), ("c", 0, 300_000.0)])
    log.record_feedback("d", 0, 999_999.0, authenticated=False)  # anonymous: not counted
    overall = {r["model_version"]: r for r in LogReader(log.store).accuracy()}
    assert overall["1"]["n"] == 2
    assert overall["1"]["mae"] == pytest.approx(20_000.0)
    assert overall["1"]["rmse"] == pytest.approx((10_000.0**2 / 2 + 30_000.0**2 / 2) ** 0.5)
    assert overall["2"]["n"] == 1
    assert overall["2"]["mae"] == 0.0
    hourly = LogReader(log.store).accuracy(bucket_s=3600)
    assert [(r["bucket_start"], r["model_version"], r["n"]) for r in hourly] == [(0.0, "1", 2), (3600.0, "2", 1)]
    assert [r["model_version"] for r in LogReader(log.store).accuracy(since_ts=1000)] == ["2"]
    log.close()


def test_traffic_comes_from_per_minute_totals(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    now = 10_000 * 60.0 + 45  # 45 s into a minute
    log.add([{**row("a", i), "ts": now - 30, "latency_ms": 4.0} for i in range(3)])
    log.add([{**row("b"), "ts": now - 30, "latency_ms": 40.0}])
    log.add([{**row("c"), "ts": now - 90, "latency_ms": 0.5}])
    log.add([{**row("d"), "ts": now - 7200, "latency_ms": 0.5}])  # outside the last hour
    assert log.flush()
    minutes = LogReader(log.store).traffic(now, 60, 60)
    assert len(minutes) == 60
    assert [(m["requests"], m["houses"], m["p50_ms"], m["p95_ms"]) for m in minutes[-2:]] == [
        (1, 1, 1, 1),
        (2, 4, 5, 50),
    ]
    assert sum(m["requests"] for m in minutes) == 3
    hours = LogReader(log.store).traffic(now, 3600, 24)
    assert sum(h["requests"] for h in hours) == 4
    log.close()


def test_a_log_from_before_the_traffic_table_is_upgraded(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    log.add([{**row("a", i), "ts": 600.0} for i in range(2)])
    log.add([{**row("b"), "ts": 610.0}])
    log.close()
    # The log as the releases before versioned migrations left it.
    with log.store.transaction() as session:
        for statement in [
            "DROP TABLE traffic",
            "DROP TABLE schema_migrations",
            "DROP TABLE workers",
            "CREATE TABLE workers (worker INTEGER PRIMARY KEY, pid INTEGER, bento_tag TEXT)",
            "ALTER TABLE feedback DROP COLUMN authenticated",
            "INSERT INTO feedback (request_id, idx, ts, actual_price_usd) VALUES ('a', 0, 1.0, 2.0)",
        ]:
            session.execute(statement)
    again = log_db.log()
    (minute,) = LogReader(again.store).traffic(659.0, 60, 1)
    assert (minute["requests"], minute["houses"]) == (2, 3)
    assert LogReader(again.store).accuracy() == []  # feedback from before authentication is not trusted
    assert again.store.query("SELECT version FROM schema_migrations ORDER BY version") == [
        (m.version,) for m in MIGRATIONS
    ]
    again.close()


def test_recent_predictions_show_no_full_request_id(log_db: LogDatabase) -> None:
    log = log_db.log()
    log.add([row("3f2b9c1e6a7d4e21"), row("ab")])
    assert log.flush()
    assert [r["request_id"] for r in LogReader(log.store).recent(5)] == ["a…", "3f2b9c1e…"]
    log.close()


def test_newest_ids_move_with_each_prediction_and_feedback(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    assert LogReader(log.store).newest() == (0, 0)
    log.add([row("a"), row("a", 1)])
    give_feedback(log, [("a", 1, 200_000.0)])
    assert LogReader(log.store).newest() == (2, 1)
    log.close()
