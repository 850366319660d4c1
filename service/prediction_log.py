"""SQLite prediction log: every priced house and every feedback, written off the request path.

Requests only append rows to an in-memory deque; one background thread per
process wakes every ``interval_s`` and drains it in batches (one transaction
per batch) into a WAL-mode database, so a request never waits for the disk and
several worker processes can write the same file. A failed write is retried
with the same rows, never dropped; :meth:`PredictionLog.close` flushes what is
pending on shutdown.

The writer polls rather than being woken: waking it on every request (as a
``queue.Queue`` does) cost 15% of a single prediction's time in lock handoffs.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from service.metrics import LOG_QUEUE, LOG_WRITE_FAILURES
from training.features import CATEGORICAL_COLUMN, NUMERIC_COLUMNS

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"

_SCHEMAS: dict[str, dict[str, type]] = {
    PREDICTIONS: {
        "id": int,
        "request_id": str,
        "idx": int,
        "endpoint": str,
        "ts": float,
        "model_version": str,
        "latency_ms": float,
        "price_usd": float,
        **dict.fromkeys(NUMERIC_COLUMNS, float),
        CATEGORICAL_COLUMN: str,
    },
    FEEDBACK: {"id": int, "request_id": str, "idx": int, "ts": float, "actual_price_usd": float},
}
_INDEXES: dict[str, list[tuple[list[str], bool]]] = {
    PREDICTIONS: [(["request_id", "idx"], True), (["ts"], False), (["model_version", "ts"], False)],
    FEEDBACK: [(["request_id", "idx"], True), (["ts"], False)],
}


def connect(path: Path) -> sqlite_utils.Database:
    """A connection that waits for other writers instead of failing with 'database is locked'."""
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    # In WAL mode NORMAL still survives a crashed process; only an OS crash can lose the last batch,
    # and it saves an fsync per batch.
    conn.execute("PRAGMA synchronous = NORMAL")
    return sqlite_utils.Database(conn)


@contextmanager
def connection(path: Path) -> Iterator[sqlite_utils.Database]:
    """A :func:`connect` connection, closed on leaving the block."""
    db = connect(path)
    try:
        yield db
    finally:
        db.close()


def create_schema(path: Path) -> None:
    """Create the tables and indexes (idempotent) and switch the file to WAL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connection(path) as db:
        db.enable_wal()
        for name, columns in _SCHEMAS.items():
            db[name].create(columns, pk="id", not_null=set(columns) - {"total_bedrooms"}, if_not_exists=True)  # type: ignore[union-attr]
            for index_columns, unique in _INDEXES[name]:
                db[name].create_index(index_columns, unique=unique, if_not_exists=True)  # type: ignore[union-attr]


class PredictionLog:
    """Collect rows for the database; a daemon thread writes them in batches."""

    def __init__(self, path: Path, batch_size: int = 500, interval_s: float = 0.05):
        self.path = path
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.write_failures = 0
        self._pending: deque[tuple[str, Sequence[dict[str, Any]]]] = deque()
        self._writing = False
        self._stop = threading.Event()
        create_schema(path)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------
    def add(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Queue ``rows`` for ``table``; returns at once."""
        self._pending.append((table, rows))

    @property
    def pending(self) -> int:
        """Requests whose rows are queued but not yet written."""
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued row is written; False if that took longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (self._pending or self._writing) and time.monotonic() < deadline:
            time.sleep(0.005)
        return not (self._pending or self._writing)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything still queued, then stop the writer."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("prediction log: %d requests still unwritten at shutdown", self.pending)

    # -- reads ----------------------------------------------------------------
    def prediction(self, request_id: str, idx: int) -> dict[str, Any] | None:
        with connection(self.path) as db:
            rows = list(db[PREDICTIONS].rows_where("request_id = ? AND idx = ?", [request_id, idx], limit=1))
        return rows[0] if rows else None

    def recent_inputs(self, rows: int) -> dict[str, list[Any]]:
        """The raw inputs of the latest ``rows`` priced houses, as columns."""
        names = [*NUMERIC_COLUMNS, CATEGORICAL_COLUMN]
        with connection(self.path) as db:
            cursor = db.execute(f"SELECT {', '.join(names)} FROM {PREDICTIONS} ORDER BY id DESC LIMIT ?", [rows])  # noqa: S608 - names are ours  # nosec B608
            records = cursor.fetchall()
        return {name: [record[i] for record in records] for i, name in enumerate(names)}

    def accuracy(self, since_ts: float = 0.0, bucket_s: float | None = None) -> list[dict[str, Any]]:
        """MAE and RMSE (USD) of priced houses that received feedback, per model version.

        With ``bucket_s`` the figures are split into time buckets of that many
        seconds (by prediction time), oldest first: accuracy over time.
        """
        bucket = f"CAST(p.ts / {float(bucket_s)} AS INTEGER) * {float(bucket_s)}" if bucket_s else "0"
        sql = f"""
            SELECT p.model_version, {bucket} AS bucket_start, COUNT(*) AS n,
                   AVG(ABS(f.actual_price_usd - p.price_usd)) AS mae,
                   AVG((f.actual_price_usd - p.price_usd) * (f.actual_price_usd - p.price_usd)) AS mse
            FROM {FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id AND p.idx = f.idx
            WHERE p.ts >= ?
            GROUP BY p.model_version, bucket_start
            ORDER BY bucket_start, p.model_version
        """  # noqa: S608 - no user input: table names and a float  # nosec B608
        with connection(self.path) as db:
            cursor = db.execute(sql, [since_ts])
            names = [column[0] for column in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        # SQLite builds without math functions have no SQRT.
        return [{**row, "rmse": math.sqrt(row.pop("mse"))} for row in rows]

    def traffic(self, now: float, bucket_s: float, buckets: int) -> list[dict[str, Any]]:
        """Requests, houses and request latency (p50/p95 in ms) per time bucket, oldest first.

        Covers the ``buckets`` buckets of ``bucket_s`` seconds before ``now``;
        empty buckets are included with zero requests.
        """
        start = (now // bucket_s - buckets + 1) * bucket_s
        sql = f"""
            SELECT CAST(ts / ? AS INTEGER) AS slot, request_id, MAX(latency_ms) AS latency_ms, COUNT(*) AS houses
            FROM {PREDICTIONS} WHERE ts >= ? GROUP BY slot, request_id
        """  # noqa: S608 - no user input  # nosec B608
        with connection(self.path) as db:
            rows = db.execute(sql, [bucket_s, start]).fetchall()
        by_slot: dict[int, list[tuple[float, int]]] = {}
        for slot, _, latency, houses in rows:
            by_slot.setdefault(int(slot), []).append((latency, houses))
        first = int(start // bucket_s)
        out = []
        for slot in range(first, first + buckets):
            requests = by_slot.get(slot, [])
            latencies = sorted(latency for latency, _ in requests)
            out.append(
                {
                    "start": slot * bucket_s,
                    "requests": len(requests),
                    "houses": sum(houses for _, houses in requests),
                    "p50_ms": _percentile(latencies, 0.5),
                    "p95_ms": _percentile(latencies, 0.95),
                }
            )
        return out

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` priced houses, newest first."""
        with connection(self.path) as db:
            return list(db[PREDICTIONS].rows_where(order_by="id DESC", limit=limit))

    # -- writer thread --------------------------------------------------------
    def _run(self) -> None:
        db = connect(self.path)
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.interval_s)
            self._drain(db)
        db.close()

    def _drain(self, db: sqlite_utils.Database) -> None:
        LOG_QUEUE.set(len(self._pending))
        # Set before taking rows off the deque, so flush() never sees neither pending nor writing rows.
        self._writing = True
        try:
            while self._pending:
                count = min(self.batch_size, len(self._pending))
                self._write(db, [self._pending.popleft() for _ in range(count)])
        finally:
            self._writing = False

    def _write(self, db: sqlite_utils.Database, items: list[tuple[str, Sequence[dict[str, Any]]]]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, rows in items:
            by_table.setdefault(table, []).extend(rows)
        delay = 0.05
        while by_table:
            try:
                with db.conn:
                    for table, rows in by_table.items():
                        _insert(db, table, rows)
                return
            except sqlite3.Error:
                self.write_failures += 1
                LOG_WRITE_FAILURES.inc()
                log.exception("prediction log: write failed, retrying in %.2f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def _insert(db: sqlite_utils.Database, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` with one prepared statement.

    sqlite-utils manages the schema, but its insert_all does per-row Python work
    that made logging a 10,000-house batch 4x slower on this hot path.
    """
    columns = [name for name in _SCHEMAS[table] if name != "id"]
    # Feedback may be corrected: the latest value for a house wins.
    verb = "INSERT OR REPLACE" if table == FEEDBACK else "INSERT"
    sql = f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    db.conn.executemany(sql, [tuple(row.get(name) for name in columns) for row in rows])


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]
