"""The log's writer: every priced house and every feedback, written off the request path.

Requests only append rows to an in-memory deque (the service's whole hand-off); one background thread
per process wakes every ``interval_s`` and drains it in batches (one transaction per batch) into the
store (housing.log.store: a WAL-mode SQLite file that several worker processes write, or a PostgreSQL
database shared by every replica), so a request never waits for the database. No row is dropped: a
request whose id is already logged (a client may reuse ``X-Request-ID``) keeps its rows under a
server-made id; while the database cannot store rows (PostgreSQL restarting, or its disk or the SQLite
file's disk full) the rows wait in the queue and the writer retries until it can; a write that keeps
failing for any other reason is retried a bounded number of times, then its rows go to a dead-letter
JSONL file, so one bad batch never stops the log. :meth:`PredictionLog.close` flushes what is pending on
shutdown.

The queue is bounded in memory (``max_queued_bytes``, from a measured cost per request and per row): past
the bound, a request's rows are dropped and counted
(``housing_prediction_log_dropped_rows_total``, a log line), never blocking or crashing anything. Whoever
must not answer without a stored row asks :attr:`PredictionLog.accepting` first (the service's strict
policy, ``HOUSING_LOG_FULL_POLICY=refuse``, answers 503 then). The dead-letter file sits beside the log,
often on the same disk: it is never where waiting rows go, and rows it cannot take are counted as dropped.

The writer also keeps per-minute traffic totals (requests, houses and a latency histogram), so
``/stats`` reads at most a day of minutes, never the log. With a retention, the same thread deletes
predictions older than it between two drains, one chunk of a few thousand rows at a time (those with
feedback stay: they are training data), so pruning a large backlog never holds the queue up for long.
Feedback is written at once, not queued: the first answer for a house is kept.

A challenger's prices in shadow (:meth:`PredictionLog.add_shadow`) take the same queue, batches, retries, dead
letters and final flush as the champion's rows: each batch inserts every table's rows with one statement per table.

The writer polls rather than being woken: waking it on every request (as a ``queue.Queue`` does) cost
15% of a single prediction's time in lock handoffs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, overload

from housing.log.metrics import (
    DEAD_LETTER_ROWS,
    DROPPED_ROWS,
    DUPLICATE_IDS,
    LOG_QUEUE,
    LOG_UNAVAILABLE,
    LOG_WRITE_FAILURES,
    PRUNED_ROWS,
    QUEUED_BYTES,
)
from housing.log.schema import CORRECTIONS, FEEDBACK, PREDICTIONS, SCHEMAS, SHADOW, TRAFFIC, TRAFFIC_SLOT_S
from housing.log.store import LogStore, Session, SQLiteStore, add_traffic, migrate, open_store
from housing.settings import HousingSettings

log = logging.getLogger(__name__)

# Table and column names in these statements are the module's own; every value is a parameter.
_RECORD_FEEDBACK = f"""INSERT INTO {FEEDBACK} (request_id, idx, ts, actual_price_usd, authenticated)
                       VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id, idx) DO NOTHING"""  # noqa: S608  # nosec B608
_FEEDBACK_PRICE = f"SELECT actual_price_usd FROM {FEEDBACK} WHERE request_id = ? AND idx = ?"  # noqa: S608  # nosec B608
_CORRECT_FEEDBACK = f"""UPDATE {FEEDBACK} SET actual_price_usd = ?, ts = ?, authenticated = 1
                        WHERE request_id = ? AND idx = ?"""  # noqa: S608  # nosec B608
_RECORD_CORRECTION = f"""INSERT INTO {CORRECTIONS} (request_id, idx, ts, previous_price_usd, actual_price_usd, reason)
                         VALUES (?, ?, ?, ?, ?, ?)"""  # noqa: S608  # nosec B608
_ID_TAKEN = f"SELECT 1 FROM {PREDICTIONS} WHERE request_id = ? LIMIT 1"  # noqa: S608  # nosec B608
# Predictions (and the shadow's prices of them) past retention without feedback (feedback is training data, and
# the shadow's evidence), a chunk at a time.
_PRUNE = {
    table: f"""DELETE FROM {table} WHERE id IN (
                SELECT p.id FROM {table} p WHERE p.ts < ? AND NOT EXISTS (
                    SELECT 1 FROM {FEEDBACK} f WHERE f.request_id = p.request_id AND f.idx = p.idx)
                LIMIT ?)"""  # noqa: S608  # nosec B608
    for table in (PREDICTIONS, SHADOW)
}
_PRUNE_TRAFFIC = f"DELETE FROM {TRAFFIC} WHERE slot < ?"  # noqa: S608  # nosec B608
# The longest pause between two writes while the database cannot store rows.
_MAX_OUTAGE_PAUSE_S = 2.0
# Dropped rows are logged at most once per this many seconds, with the count since the last line.
_DROP_LOG_EVERY_S = 10.0
# What a queued request holds in memory (tracemalloc, Python 3.11): about 1.9 KB for a one-house request (its
# columns, their lists, the shared fields) and 170 bytes per house of a 10,000-house batch.
REQUEST_BYTES, ROW_BYTES = 2_000, 180
Pending = list[tuple[str, Sequence[dict[str, Any]]]]


class RequestRows(Sequence[dict[str, Any]]):
    """One request's log rows, kept as columns until the writer stores them.

    Reads as a sequence of row dicts (``{**one value of each column, **shared}``), but
    none is built on the request path: a 10,000-house batch built as one dict per
    house spent 30 ms of its request on them; the writer takes each row's values
    straight from the columns (:meth:`values`).

    Parameters
    ----------
    columns : mapping of str to sequence
        Per-row values, each of length n_rows, in the rows' key order.
    shared : mapping of str to value
        The values every row has (request id, endpoint, time, model version, latency).
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]], shared: Mapping[str, Any]) -> None:
        lengths = {len(values) for values in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns: expected one length for all, got {sorted(lengths)}")
        self.columns, self.shared, self._length = columns, shared, lengths.pop()

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        return self._row(values[index] for values in self.columns.values())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self._row, zip(*self.columns.values(), strict=True))

    def _row(self, values: Iterable[Any]) -> dict[str, Any]:
        """The row dict of one value per column."""
        return {**dict(zip(self.columns, values, strict=True)), **self.shared}

    def values(self, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Each row's values of ``names`` (None for a name it lacks), in row order."""
        columns = [self.columns[name] if name in self.columns else repeat(self.shared.get(name), self._length)
                   for name in names]  # fmt: skip
        return zip(*columns, strict=True)


def row_values(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> Iterable[tuple[Any, ...]]:
    """Each of ``rows``' values of ``names`` (None for a name a row lacks)."""
    if isinstance(rows, RequestRows):
        return rows.values(names)
    # map() over the row's own get: the writer holds the GIL while it builds these, so it is kept short.
    return (tuple(map(row.get, names)) for row in rows)


class PredictionLog:
    """Collect rows for the store; a daemon thread writes them in batches and prunes past retention.

    ``store`` is a :class:`housing.log.store.LogStore` (whoever made it closes it), or the path of a SQLite
    file (closed with the log). Dead letters go to ``dead_letter_path`` (by default beside the SQLite file).
    """

    def __init__(
        self,
        store: LogStore | Path,
        batch_size: int = 500,
        interval_s: float = 0.05,
        max_retries: int = 5,
        dead_letter_path: Path | None = None,
        retention_s: float | None = None,
        prune_interval_s: float = 600.0,
        prune_chunk: int = 5000,
        max_queued_bytes: int = 256 * 2**20,
    ):
        self.store = SQLiteStore(store) if isinstance(store, Path) else store
        self.owns_store = isinstance(store, Path)
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.max_retries = max_retries
        self.retention_s = retention_s
        self.prune_interval_s = prune_interval_s
        self.prune_chunk = prune_chunk
        self.max_queued_bytes = max_queued_bytes
        self.write_failures = 0
        self.dead_letters = 0
        self.pruned = 0
        self.dropped = 0
        # Since when, and why, the database cannot store rows (None while it does): /health reports it.
        self.unavailable_since: float | None = None
        self.unavailable_reason: str | None = None
        # Bytes queued and bytes taken off the queue so far: only add() (under its lock) moves the first and only the
        # writer thread the second, so their difference is the queue's size without a lock on the writer's side.
        self._bytes_in = self._bytes_out = self._requests_in = self._requests_out = 0
        self._adding = threading.Lock()
        self._dropped_since_line, self._last_drop_line = 0, 0.0
        if dead_letter_path is None:
            if not isinstance(self.store, SQLiteStore):
                raise ValueError("a prediction log on a server needs a dead_letter_path")
            dead_letter_path = self.store.path.with_name(self.store.path.name + ".deadletter.jsonl")
        self.dead_letter_path = dead_letter_path
        self._pending: deque[tuple[str, Sequence[dict[str, Any]]]] = deque()
        self._writing = False
        self._stop = threading.Event()
        migrate(self.store)
        # The pass of retention in progress (its cutoff and the rows deleted so far), and when the next one starts:
        # the first waits one interval, as a starting worker has better things to do.
        self._prune_pass: tuple[float, int] | None = None
        self._next_prune = time.monotonic() + prune_interval_s
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    # -- request path -------------------------------------------------------
    def add(self, rows: Sequence[dict[str, Any]], table: str = PREDICTIONS) -> bool:
        """Queue one request's ``rows`` for ``table`` (the priced houses); returns at once.

        False, with the rows dropped and counted, when the queue would pass ``max_queued_bytes``.
        """
        cost = REQUEST_BYTES + ROW_BYTES * len(rows)
        with self._adding:
            if self._bytes_in - self._bytes_out + cost > self.max_queued_bytes:
                self._drop(len(rows), "the queue is full")
                return False
            self._bytes_in += cost
            self._requests_in += 1
        self._pending.append((table, rows))
        return True

    def add_shadow(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Queue a challenger's prices of shadowed houses (each row keyed by its house's request id and position, with
        the champion's price beside the challenger's): :meth:`add` for the shadow's table."""
        return self.add(rows, SHADOW)

    @property
    def pending(self) -> int:
        """Requests whose rows are queued but not yet written."""
        return len(self._pending)

    @property
    def queued_bytes(self) -> int:
        """What the queued requests hold in memory, estimated (a request counts until its batch is stored or set
        aside)."""
        return self._bytes_in - self._bytes_out

    @property
    def accepting(self) -> bool:
        """Whether a request's rows will be stored: the database takes rows and the queue has room."""
        return self.unavailable_since is None and self.queued_bytes < self.max_queued_bytes

    @property
    def problem(self) -> str | None:
        """Why rows are not being stored now, for /health; None while they are."""
        if self.unavailable_since is None:
            return None
        return (f"prediction log: {self.store.describe()} {self.unavailable_reason} for "
                f"{time.time() - self.unavailable_since:.0f} s; {self._requests_in - self._requests_out:,} requests "
                f"wait in memory ({self.queued_bytes / 2**20:.2f} of at most {self.max_queued_bytes / 2**20:.2f} MB), "
                f"{self.dropped:,} rows dropped")  # fmt: skip

    # -- lifecycle ------------------------------------------------------------
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued row is written; False if that took longer than ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (self._pending or self._writing) and time.monotonic() < deadline:
            time.sleep(0.005)
        return not (self._pending or self._writing)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write everything still queued, then stop the writer (and close a store of its own)."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("prediction log: %d requests still unwritten at shutdown", self.pending)
        elif self.owns_store:
            self.store.close()

    # -- feedback -------------------------------------------------------------
    def record_feedback(self, request_id: str, idx: int, actual_price_usd: float, authenticated: bool) -> bool:
        """Store the first feedback for a priced house; False (and nothing written) if it has one already."""
        with self.store.transaction() as session:
            args = [request_id, idx, time.time(), actual_price_usd, int(authenticated)]
            return bool(session.execute(_RECORD_FEEDBACK, args).rowcount == 1)

    def correct_feedback(self, request_id: str, idx: int, actual_price_usd: float, reason: str) -> float | None:
        """Replace recorded feedback and keep the correction on record; the previous price, None if none."""
        with self.store.transaction(lock=True) as session:
            found = session.execute(_FEEDBACK_PRICE, [request_id, idx]).fetchone()
            if found is None:
                return None
            now = time.time()
            session.execute(_CORRECT_FEEDBACK, [actual_price_usd, now, request_id, idx])
            session.execute(_RECORD_CORRECTION, [request_id, idx, now, found[0], actual_price_usd, reason])
        return float(found[0])

    # -- retention ------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Delete predictions (and traffic minutes) older than the retention, in chunks; the rows deleted.

        Each chunk is its own short transaction, so writers and readers wait at most one chunk.
        """
        if self.retention_s is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_s
        deleted = 0
        while not self._stop.is_set():
            chunk, more = self._prune_chunk(cutoff)
            deleted += chunk
            if not more:
                break
        self._prune_traffic(cutoff)
        return deleted

    def _prune_chunk(self, cutoff: float) -> tuple[int, bool]:
        """One chunk of each table's rows past ``cutoff``: the predictions deleted, and whether more may wait (a table
        gave a full chunk)."""
        deleted = {}
        for table, sql in _PRUNE.items():
            with self.store.transaction() as session:
                deleted[table] = int(session.execute(sql, [cutoff, self.prune_chunk]).rowcount)
        self.pruned += deleted[PREDICTIONS]
        PRUNED_ROWS.inc(deleted[PREDICTIONS])
        return deleted[PREDICTIONS], max(deleted.values()) == self.prune_chunk

    def _prune_traffic(self, cutoff: float) -> None:
        with self.store.transaction() as session:
            session.execute(_PRUNE_TRAFFIC, [int(cutoff // TRAFFIC_SLOT_S)])

    def _prune_due(self) -> None:
        """One chunk of the retention pass in progress, or of a new one when it is time: called between drains."""
        if self.retention_s is None or (self._prune_pass is None and time.monotonic() < self._next_prune):
            return
        cutoff, deleted = self._prune_pass or (time.time() - self.retention_s, 0)
        try:
            chunk, more = self._prune_chunk(cutoff)
            if more:
                self._prune_pass = (cutoff, deleted + chunk)
                return
            self._prune_traffic(cutoff)
            if deleted + chunk:
                log.info("prediction log: pruned %d predictions past retention", deleted + chunk)
        except Exception:  # the writer must outlive a failed pass (a database away for a while): next interval
            log.exception("prediction log: pruning failed; trying again in %.0f s", self.prune_interval_s)
        self._prune_pass, self._next_prune = None, time.monotonic() + self.prune_interval_s

    # -- writer thread --------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.interval_s)
            self._drain()
            if not stopping:
                self._prune_due()

    def _drain(self) -> None:
        LOG_QUEUE.set(len(self._pending))
        QUEUED_BYTES.set(self.queued_bytes)
        # Set before taking rows off the deque, so flush() never sees neither pending nor writing rows.
        self._writing = True
        try:
            while self._pending:
                count = min(self.batch_size, len(self._pending))
                items = [self._pending.popleft() for _ in range(count)]
                self._write(items)
                self._bytes_out += sum(REQUEST_BYTES + ROW_BYTES * len(rows) for _, rows in items)
                self._requests_out += len(items)
        finally:
            self._writing = False

    def _write(self, items: Pending) -> None:
        """Write one batch of requests; retried ``max_retries`` times, then kept in the dead-letter file.

        While the database cannot store rows (unreachable, or its disk full) the batch waits, and the queue
        behind it grows, without using up its retries, until the log is closed: a database restart, or a disk
        that fills and is freed, loses no row the queue could hold.
        """
        delay, attempt = 0.05, 0
        while attempt <= self.max_retries:
            try:
                self._insert_batch(items)
                self._available()
                return
            except self.store.integrity_error:
                # A request id that is logged already: write request by request, renaming the repeats.
                items = self._renamed_repeats(items)
                attempt += 1
            except self.store.error as exc:
                self.write_failures += 1
                LOG_WRITE_FAILURES.inc()
                if (reason := self.store.unavailable(exc)) and not self._stop.is_set():
                    self._unavailable(reason, exc)
                    self._stop.wait(min(delay, _MAX_OUTAGE_PAUSE_S))
                    delay = min(delay * 2, _MAX_OUTAGE_PAUSE_S)
                    continue
                log.exception("prediction log: write failed (attempt %d of %d)", attempt + 1, self.max_retries + 1)
                attempt += 1
                if attempt <= self.max_retries:
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        self._dead_letter(items)

    def _unavailable(self, reason: str, exc: Exception) -> None:
        if self.unavailable_since is None:
            self.unavailable_since, self.unavailable_reason = time.time(), reason
            LOG_UNAVAILABLE.set(1)
            log.error("prediction log: %s cannot store rows (%s: %s); they wait in memory, at most %d MB",
                      self.store.describe(), reason, exc, self.max_queued_bytes // 2**20)  # fmt: skip

    def _available(self) -> None:
        if self.unavailable_since is not None:
            log.warning("prediction log: %s stores rows again after %.1f s (%s); %d rows dropped meanwhile",
                        self.store.describe(), time.time() - self.unavailable_since, self.unavailable_reason,
                        self.dropped)  # fmt: skip
            self.unavailable_since = self.unavailable_reason = None
            LOG_UNAVAILABLE.set(0)

    def _drop(self, rows: int, why: str) -> None:
        """Count ``rows`` no store will hold, and say so in the log at most every ``_DROP_LOG_EVERY_S``."""
        self.dropped += rows
        DROPPED_ROWS.inc(rows)
        self._dropped_since_line += rows
        if time.monotonic() - self._last_drop_line >= _DROP_LOG_EVERY_S:
            log.error("prediction log: %d rows dropped (%s); %d in all", self._dropped_since_line, why, self.dropped)
            self._dropped_since_line, self._last_drop_line = 0, time.monotonic()

    def _insert_batch(self, items: Pending) -> None:
        """One transaction: every table's rows of the batch (one statement per table), and the traffic minutes of its
        priced requests."""
        tables: dict[str, list[Sequence[dict[str, Any]]]] = {}
        for table, rows in items:
            tables.setdefault(table, []).append(rows)
        with self.store.transaction() as session:
            for table, requests in tables.items():
                _insert(session, table, requests)
            priced = tables.get(PREDICTIONS, [])
            add_traffic(session, ((rows[0]["ts"], rows[0]["latency_ms"], len(rows)) for rows in priced if rows))

    def _renamed_repeats(self, items: Pending) -> Pending:
        """The batch with every request whose id is logged (or repeated in the batch) given a fresh id."""
        seen: set[str] = set()
        renamed: Pending = []
        with self.store.reading() as session:
            for table, rows in items:
                if table != PREDICTIONS:  # a shadow row's id is its priced house's, taken by design
                    renamed.append((table, rows))
                    continue
                request_id = rows[0]["request_id"] if rows else ""
                taken = request_id in seen or session.execute(_ID_TAKEN, [request_id]).fetchone()
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

    def _dead_letter(self, items: Pending) -> None:
        """Keep rows the database would not take in a JSONL file, for an operator to load later."""
        rows = sum(len(request_rows) for _, request_rows in items)
        self.dead_letters += rows
        DEAD_LETTER_ROWS.inc(rows)
        try:
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("a") as out:
                out.writelines(json.dumps({"table": table, "rows": list(request_rows)}) + "\n"
                               for table, request_rows in items)  # fmt: skip
            log.error("prediction log: %d rows kept in %s", rows, self.dead_letter_path)
        except OSError as exc:
            self._drop(rows, f"neither the database nor {self.dead_letter_path} took them: {exc}")


def open_log(config: HousingSettings, path: Path | None = None) -> PredictionLog:
    """The prediction log the settings name (PostgreSQL, else the SQLite file ``path`` or ``prediction_db``).

    The log owns its store: closing the log closes it.
    """
    if path is not None:
        config = config.model_copy(update={"prediction_db": path})
    log = PredictionLog(
        open_store(config),
        config.writer_batch_size,
        config.writer_interval_s,
        config.writer_max_retries,
        dead_letter_path=config.dead_letter_path,
        retention_s=config.retention_s,
        prune_interval_s=config.log_prune_interval_s,
        max_queued_bytes=config.log_queue_max_mb * 2**20,
    )
    log.owns_store = True
    return log


def _insert(session: Session, table: str, requests: Iterable[Sequence[dict[str, Any]]]) -> None:
    """Insert the rows of ``requests`` (each a request's rows) into ``table`` with one prepared statement.

    Not through sqlite-utils' insert_all: its per-row Python work made logging a
    10,000-house batch 4x slower on this hot path.
    """
    columns = [name for name in SCHEMAS[table] if name != "id"]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608  # nosec B608
    session.executemany(sql, [values for rows in requests for values in row_values(rows, columns)])
