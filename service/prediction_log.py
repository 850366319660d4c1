"""SQLite prediction log: every priced house and every feedback, written off the request path.

Requests only append rows to an in-memory deque; one background thread per
process wakes every ``interval_s`` and drains it in batches (one transaction
per batch) into a WAL-mode database, so a request never waits for the disk and
several worker processes can write the same file. No row is dropped: a request
whose id is already logged (a client may reuse ``X-Request-ID``) keeps its rows
under a server-made id; a write that keeps failing is retried a bounded number
of times, then its rows go to a dead-letter JSONL file beside the database, so
one bad batch never stops the log. :meth:`PredictionLog.close` flushes what is
pending on shutdown.

The writer also keeps per-minute traffic totals (requests, houses and a
latency histogram), so ``/stats`` reads at most a day of minutes, never the log.
Feedback is written at once, not queued: the first answer for a house is kept.

The writer polls rather than being woken: waking it on every request (as a
``queue.Queue`` does) cost 15% of a single prediction's time in lock handoffs.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS
from housing.log_schema import ADDED_COLUMNS, CORRECTIONS, FEEDBACK, INDEXES, PREDICTIONS, SCHEMAS
from service.prometheus_metrics import DEAD_LETTER_ROWS, DUPLICATE_IDS, LOG_QUEUE, LOG_WRITE_FAILURES

log = logging.getLogger(__name__)

TRAFFIC = "traffic"
TRAFFIC_SLOT_S = 60
# Upper bounds (ms) of the request-latency histogram kept per minute; p50 and p95 are read from it.
# The last is the service's timeout: no answered request took longer.
LATENCY_BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 30_000)
_LATENCY_COLUMNS = [f"le_{i}" for i in range(len(LATENCY_BUCKETS_MS))]

# Table and column names in these statements are the module's own; every value is a parameter.
_RECORD_FEEDBACK = f"""INSERT OR IGNORE INTO {FEEDBACK} (request_id, idx, ts, actual_price_usd, authenticated)
                       VALUES (?, ?, ?, ?, ?)"""  # noqa: S608  # nosec B608
_FEEDBACK_PRICE = f"SELECT actual_price_usd FROM {FEEDBACK} WHERE request_id = ? AND idx = ?"  # noqa: S608  # nosec B608
_CORRECT_FEEDBACK = f"""UPDATE {FEEDBACK} SET actual_price_usd = ?, ts = ?, authenticated = 1
                        WHERE request_id = ? AND idx = ?"""  # noqa: S608  # nosec B608
_RECORD_CORRECTION = f"""INSERT INTO {CORRECTIONS} (request_id, idx, ts, previous_price_usd, actual_price_usd, reason)
                         VALUES (?, ?, ?, ?, ?, ?)"""  # noqa: S608  # nosec B608
_ID_TAKEN = f"SELECT 1 FROM {PREDICTIONS} WHERE request_id = ? LIMIT 1"  # noqa: S608  # nosec B608
_NEWEST = f"SELECT (SELECT MAX(id) FROM {PREDICTIONS}), (SELECT MAX(id) FROM {FEEDBACK})"  # noqa: S608  # nosec B608


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
    """Create or upgrade the tables and indexes (idempotent) and switch the file to WAL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connection(path) as db:
        db.enable_wal()
        for name, columns in SCHEMAS.items():
            db[name].create(columns, pk="id", not_null=set(columns) - {"total_bedrooms"}, if_not_exists=True)  # type: ignore[union-attr]
            for column, value in ADDED_COLUMNS.get(name, {}).items():
                if column not in db[name].columns_dict:
                    db[name].add_column(column, type(value), not_null_default=value)  # type: ignore[union-attr]
            for index_columns, unique in INDEXES[name]:
                db[name].create_index(index_columns, unique=unique, if_not_exists=True)  # type: ignore[union-attr]
        _create_traffic(db)


def _create_traffic(db: sqlite_utils.Database) -> None:
    """The per-minute traffic table; made from the log's rows when a log from before it is upgraded.

    One transaction that takes the write lock first: of several workers starting
    at once, one builds the table and the others find it built.
    """
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        if db[TRAFFIC].exists():
            return
        histogram = ", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in _LATENCY_COLUMNS)
        db.execute(f"CREATE TABLE {TRAFFIC} (slot INTEGER PRIMARY KEY, requests INTEGER NOT NULL, "
                   f"houses INTEGER NOT NULL, {histogram})")  # fmt: skip
        requests = db.execute(
            f"SELECT MIN(ts), MAX(latency_ms), COUNT(*) FROM {PREDICTIONS} GROUP BY request_id"  # noqa: S608 - our names  # nosec B608
        )
        _add_traffic(db, requests)


def _add_traffic(db: sqlite_utils.Database, requests: Iterable[tuple[float, float, int]]) -> None:
    """Add (time, latency ms, houses) of each request to its minute's totals."""
    slots: dict[int, list[int]] = {}
    for ts, latency_ms, houses in requests:
        totals = slots.setdefault(int(ts // TRAFFIC_SLOT_S), [0] * (2 + len(LATENCY_BUCKETS_MS)))
        totals[0] += 1
        totals[1] += houses
        totals[2 + min(bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms), len(LATENCY_BUCKETS_MS) - 1)] += 1
    names = ["requests", "houses", *_LATENCY_COLUMNS]
    updates = ", ".join(f"{name} = {name} + excluded.{name}" for name in names)
    sql = f"""INSERT INTO {TRAFFIC} (slot, {", ".join(names)}) VALUES ({", ".join("?" * (len(names) + 1))})
              ON CONFLICT (slot) DO UPDATE SET {updates}"""  # noqa: S608 - our names  # nosec B608
    db.conn.executemany(sql, [(slot, *totals) for slot, totals in slots.items()])


class PredictionLog:
    """Collect rows for the database; a daemon thread writes them in batches."""

    def __init__(self, path: Path, batch_size: int = 500, interval_s: float = 0.05, max_retries: int = 5):
        self.path = path
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_retries = max_retries
        self.write_failures = 0
        self.dead_letters = 0
        self._readers = threading.local()
        self._pending: deque[tuple[str, Sequence[dict[str, Any]]]] = deque()
        self._writing = False
        self._stop = threading.Event()
        create_schema(path)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------
    def add(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Queue one request's ``rows`` for ``table`` (predictions); returns at once."""
        self._pending.append((table, rows))

    @property
    def dead_letter_path(self) -> Path:
        """Where rows that could not be written are kept, one JSON object per request."""
        return self.path.with_name(self.path.name + ".deadletter.jsonl")

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

    # -- feedback -------------------------------------------------------------
    def record_feedback(self, request_id: str, idx: int, actual_price_usd: float, authenticated: bool) -> bool:
        """Store the first feedback for a priced house; False (and nothing written) if it has one already."""
        db = self._reader()
        with db.conn:
            cursor = db.execute(_RECORD_FEEDBACK, [request_id, idx, time.time(), actual_price_usd, int(authenticated)])
        return cursor.rowcount == 1

    def correct_feedback(self, request_id: str, idx: int, actual_price_usd: float, reason: str) -> float | None:
        """Replace recorded feedback and keep the correction on record; the previous price, None if none."""
        db = self._reader()
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            found = db.execute(_FEEDBACK_PRICE, [request_id, idx]).fetchone()
            if found is None:
                return None
            now = time.time()
            db.execute(_CORRECT_FEEDBACK, [actual_price_usd, now, request_id, idx])
            db.execute(_RECORD_CORRECTION, [request_id, idx, now, found[0], actual_price_usd, reason])
        return float(found[0])

    # -- reads ----------------------------------------------------------------
    def _reader(self) -> sqlite_utils.Database:
        """This thread's connection: opening one per read cost more than the read."""
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = connect(self.path)
        return db

    def prediction(self, request_id: str, idx: int) -> dict[str, Any] | None:
        rows = list(self._reader()[PREDICTIONS].rows_where("request_id = ? AND idx = ?", [request_id, idx], limit=1))
        return rows[0] if rows else None

    def newest(self) -> tuple[int, int]:
        """The ids of the newest prediction and the newest feedback (0 when none): what a cached view depends on."""
        row = self._reader().execute(_NEWEST).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def recent_inputs(self, rows: int) -> dict[str, list[Any]]:
        """The raw inputs of the latest ``rows`` priced houses, as columns."""
        names = [*NUMERIC_COLUMNS, CATEGORICAL_COLUMN]
        sql = f"SELECT {', '.join(names)} FROM {PREDICTIONS} ORDER BY id DESC LIMIT ?"  # noqa: S608 - names are ours  # nosec B608
        records = self._reader().execute(sql, [rows]).fetchall()
        return {name: [record[i] for record in records] for i, name in enumerate(names)}

    def accuracy(self, since_ts: float = 0.0, bucket_s: float | None = None) -> list[dict[str, Any]]:
        """MAE and RMSE (USD) of priced houses that received authenticated feedback, per model version.

        With ``bucket_s`` the figures are split into time buckets of that many
        seconds (by prediction time), oldest first: accuracy over time.
        """
        sql = f"""
            SELECT p.model_version, CAST(p.ts / ? AS INTEGER) * ? AS bucket_start, COUNT(*) AS n,
                   AVG(ABS(f.actual_price_usd - p.price_usd)) AS mae,
                   AVG((f.actual_price_usd - p.price_usd) * (f.actual_price_usd - p.price_usd)) AS mse
            FROM {FEEDBACK} f JOIN {PREDICTIONS} p ON p.request_id = f.request_id AND p.idx = f.idx
            WHERE p.ts >= ? AND f.authenticated = 1
            GROUP BY p.model_version, bucket_start
            ORDER BY bucket_start, p.model_version
        """  # noqa: S608 - table names are ours; the values are parameters  # nosec B608
        # Without buckets every prediction falls in one bucket that starts at 0.
        width = float(bucket_s) if bucket_s else math.inf
        cursor = self._reader().execute(sql, [width, 0.0 if width == math.inf else width, since_ts])
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        # SQLite builds without math functions have no SQRT.
        return [{**row, "rmse": math.sqrt(row.pop("mse"))} for row in rows]

    def traffic(self, now: float, bucket_s: int, buckets: int) -> list[dict[str, Any]]:
        """Requests, houses and request latency (p50/p95 in ms) per time bucket, oldest first.

        Covers the ``buckets`` buckets of ``bucket_s`` seconds (a multiple of a
        minute) before ``now``; empty buckets are included with zero requests.
        Summed by SQLite from the per-minute totals: the cost does not grow with the
        log. Percentiles are the upper bound of their histogram bucket (``LATENCY_BUCKETS_MS``).
        """
        first = int(now // bucket_s) - buckets + 1
        per = bucket_s // TRAFFIC_SLOT_S
        sums = ", ".join(f"SUM({name})" for name in ["requests", "houses", *_LATENCY_COLUMNS])
        sql = f"SELECT slot / ? - ?, {sums} FROM {TRAFFIC} WHERE slot >= ? GROUP BY 1"  # noqa: S608 - our names  # nosec B608
        totals = {int(position): counts for position, *counts in self._reader().execute(sql, [per, first, first * per])}
        empty = [0] * (2 + len(LATENCY_BUCKETS_MS))
        return [
            {"start": float((first + i) * bucket_s), "requests": requests, "houses": houses,
             "p50_ms": _percentile(histogram, 0.5), "p95_ms": _percentile(histogram, 0.95)}
            for i in range(buckets)
            for requests, houses, *histogram in [totals.get(i, empty)]
        ]  # fmt: skip

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` priced houses, newest first, with request ids cut short (they are feedback keys)."""
        rows = list(self._reader()[PREDICTIONS].rows_where(order_by="id DESC", limit=limit))
        return [{**row, "request_id": short_id(row["request_id"])} for row in rows]

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
        """Write one batch of requests; retried ``max_retries`` times, then kept in the dead-letter file."""
        delay = 0.05
        for attempt in range(self.max_retries + 1):
            try:
                self._insert_batch(db, items)
                return
            except sqlite3.IntegrityError:
                # A request id that is logged already: write request by request, renaming the repeats.
                items = self._renamed_repeats(db, items)
            except sqlite3.Error:
                self.write_failures += 1
                LOG_WRITE_FAILURES.inc()
                log.exception("prediction log: write failed (attempt %d of %d)", attempt + 1, self.max_retries + 1)
                if attempt < self.max_retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        self._dead_letter(items)

    @staticmethod
    def _insert_batch(db: sqlite_utils.Database, items: list[tuple[str, Sequence[dict[str, Any]]]]) -> None:
        rows = [row for _, request_rows in items for row in request_rows]
        with db.conn:
            _insert(db, PREDICTIONS, rows)
            _add_traffic(db, ((rows[0]["ts"], rows[0]["latency_ms"], len(rows)) for _, rows in items if rows))

    def _renamed_repeats(
        self, db: sqlite_utils.Database, items: list[tuple[str, Sequence[dict[str, Any]]]]
    ) -> list[tuple[str, Sequence[dict[str, Any]]]]:
        """The batch with every request whose id is logged (or repeated in the batch) given a fresh id."""
        seen: set[str] = set()
        renamed = []
        for table, rows in items:
            request_id = rows[0]["request_id"] if rows else ""
            taken = request_id in seen or db.execute(_ID_TAKEN, [request_id]).fetchone()
            if taken:
                fresh = f"{request_id}~{uuid.uuid4().hex[:8]}"
                log.warning(
                    "prediction log: request id %r is logged already; its rows are kept as %r", request_id, fresh
                )
                request_id, rows = fresh, [{**row, "request_id": fresh} for row in rows]
                DUPLICATE_IDS.inc()
            seen.add(request_id)
            renamed.append((table, rows))
        return renamed

    def _dead_letter(self, items: list[tuple[str, Sequence[dict[str, Any]]]]) -> None:
        """Keep rows the database would not take in a JSONL file, for an operator to load later."""
        rows = sum(len(request_rows) for _, request_rows in items)
        self.dead_letters += rows
        DEAD_LETTER_ROWS.inc(rows)
        try:
            with self.dead_letter_path.open("a") as out:
                out.writelines(json.dumps({"table": table, "rows": list(request_rows)}) + "\n"
                               for table, request_rows in items)  # fmt: skip
            log.error("prediction log: %d rows kept in %s", rows, self.dead_letter_path)
        except OSError:
            log.exception("prediction log: %d rows lost: neither the database nor %s took them", rows,
                          self.dead_letter_path)  # fmt: skip


def short_id(request_id: str) -> str:
    """The start of a request id: enough to recognise it, not enough to send feedback for it."""
    return request_id[: min(8, len(request_id) // 2)] + "…"


def _insert(db: sqlite_utils.Database, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` with one prepared statement.

    sqlite-utils manages the schema, but its insert_all does per-row Python work
    that made logging a 10,000-house batch 4x slower on this hot path.
    """
    columns = [name for name in SCHEMAS[table] if name != "id"]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608  # nosec B608
    db.conn.executemany(sql, [tuple(row.get(name) for name in columns) for row in rows])


def _percentile(histogram: Sequence[int], q: float) -> float | None:
    """Upper bound (ms) of the latency bucket holding the nearest-rank ``q`` percentile (None when empty)."""
    total = sum(histogram)
    if not total:
        return None
    rank, seen = max(1, math.ceil(q * total)), 0
    for bound, count in zip(LATENCY_BUCKETS_MS, histogram, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return LATENCY_BUCKETS_MS[-1]
