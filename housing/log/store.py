"""Where the prediction log lives: an embedded SQLite file, or a PostgreSQL database shared by every replica.

``HOUSING_DATABASE_URL`` picks PostgreSQL (psycopg 3 with a connection pool);
unset, the log is the SQLite file ``HOUSING_PREDICTION_DB`` (sqlite-utils renders
its tables). Both run the same SQL, written with ``?`` placeholders; a
:class:`LogStore` says what differs (placeholders, DDL types, how a writer locks
out the others, which errors mean the database is away rather than the rows are
bad). :func:`migrate` brings either to the schema of housing.log.schema.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from housing.log.schema import (
    DEFAULTS,
    INDEXES,
    LATENCY_BUCKETS_MS,
    LATENCY_COLUMNS,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    NULLABLE,
    PREDICTIONS,
    SCHEMAS,
    TRAFFIC,
    TRAFFIC_SLOT_S,
    Migration,
    primary_key,
)
from housing.settings import HousingSettings

# The advisory lock PostgreSQL writers take where SQLite takes its write lock ("housing" in ASCII).
_PG_LOCK_KEY = 0x686F7573696E67
# How long a SQLite connection waits for another's lock; a starting worker retries its switch to WAL as long.
SQLITE_BUSY_TIMEOUT_S = 30.0
_PG_TYPES = {int: "BIGINT", float: "DOUBLE PRECISION", str: "TEXT"}
# What a store's :meth:`LogStore.unavailable` says when its disk is full.
DISK_FULL = "disk full"


class Session:
    """One transaction's (or one autocommit read's) cursor, taking the project's ``?``-style SQL."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self.cursor = cursor
        self._placeholder = placeholder

    def _sql(self, sql: str) -> str:
        return sql if self._placeholder == "?" else sql.replace("?", self._placeholder)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor, for its rows, ``rowcount`` and ``description``."""
        self.cursor.execute(self._sql(sql), params)
        return self.cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self._sql(sql), list(rows))

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of a query as dicts keyed by column name."""
        cursor = self.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class LogStore(ABC):
    """A database engine holding the prediction log: connections, transactions and what its SQL needs."""

    #: Raised when a row breaks a unique index (a request id that is logged already).
    integrity_error: type[Exception]
    #: The base of every error the engine's driver raises.
    error: type[Exception]
    #: The expression (a ``str.format`` template) that cuts a float to its integer part, towards zero.
    trunc: str

    @abstractmethod
    def transaction(self, lock: bool = False) -> Any:
        """A context manager: a :class:`Session` inside one transaction, committed on leaving the block.

        With ``lock`` the transaction first takes the log's write lock, so that a
        read-then-write (a migration, a feedback correction) is not interleaved with another one.
        """

    @abstractmethod
    def reading(self) -> Any:
        """A context manager: a :class:`Session` for reads outside a transaction."""

    @abstractmethod
    def table_columns(self, session: Session, table: str) -> set[str]:
        """The columns ``table`` has (empty when there is no such table)."""

    @abstractmethod
    def column_sql(self, name: str, kind: type, not_null: bool, default: object) -> str:
        """One column's definition in this engine's DDL."""

    @abstractmethod
    def create_table_sql(self, table: str) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for a table of housing.log.schema."""

    def unavailable(self, exc: BaseException) -> str | None:
        """Why ``exc`` says the rows cannot be stored *now* (they wait for the database), or None when it says the
        rows themselves are bad: ``"disk full"`` or ``"unreachable"``."""
        return None

    @abstractmethod
    def prepare(self) -> None:
        """What the engine needs before its first migration (SQLite's folder and journal mode)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the log is, for messages (no password)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read's rows."""
        with self.reading() as session:
            return list(session.execute(sql, params).fetchall())

    def query_dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """A read's rows as dicts keyed by column name."""
        with self.reading() as session:
            rows: list[dict[str, Any]] = session.dicts(sql, params)
            return rows


class SQLiteStore(LogStore):
    """The embedded log: one WAL-mode SQLite file that every worker process on the host writes.

    Each thread keeps its own connection (opening one per read cost more than the
    read); a write waits for other writers instead of failing with 'database is locked'.
    """

    integrity_error = sqlite3.IntegrityError
    error = sqlite3.Error
    trunc = "CAST({} AS INTEGER)"

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            target = f"file:{self.path}?mode=ro" if self.read_only else str(self.path)
            # Autocommit: transactions are begun explicitly, so that a writer can take the lock first.
            conn = sqlite3.connect(
                target, uri=self.read_only, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            conn.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            # In WAL mode NORMAL still survives a crashed process; only an OS crash can lose the last batch,
            # and it saves an fsync per batch.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._guard:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, lock: bool = False) -> Iterator[Session]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if lock else "BEGIN")
        try:
            yield Session(conn.cursor(), "?")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        yield Session(self._connection().cursor(), "?")

    def prepare(self) -> None:
        """Switch the file to WAL (it stays so). Of workers starting at once, the first switches it; the others may
        find it mid-migration, and then the switch fails at once (no busy timeout applies) until WAL is on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn, deadline = self._connection(), time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def table_columns(self, session: Session, table: str) -> set[str]:
        return {row[1] for row in session.execute(f"PRAGMA table_info({table})").fetchall()}

    def unavailable(self, exc: BaseException) -> str | None:
        return DISK_FULL if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL else None

    def column_sql(self, name: str, kind: type, not_null: bool, default: object) -> str:
        import sqlite_utils  # with pandas, about 0.4 s: loaded when a table is made (see housing.model_format)

        sql = f"{name} {sqlite_utils.db.COLUMN_TYPE_MAPPING[kind]}"
        return sql + (f" NOT NULL DEFAULT {default!r}" if not_null else "")

    def create_table_sql(self, table: str) -> str:
        import sqlite_utils

        columns = SCHEMAS[table]
        return sqlite_utils.Database(memory=True).create_table_sql(
            table,
            dict(columns),
            pk=primary_key(table),
            not_null=set(columns) - NULLABLE.get(table, set()),
            defaults=DEFAULTS.get(table),
            if_not_exists=True,
        )

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        with self._guard:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


class PostgresStore(LogStore):
    """The shared log: a PostgreSQL database that every replica on every host writes, through a pool.

    Connections are checked as they leave the pool, so that after a restart of the
    server a broken one is replaced instead of failing a write.
    """

    integrity_error = psycopg.IntegrityError
    error = psycopg.Error
    trunc = "TRUNC({})"

    def __init__(self, url: str, pool_size: int = 4, timeout_s: float = 5.0) -> None:
        self._url = url
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True},
            name="prediction-log",
            open=True,
        )

    @contextmanager
    def transaction(self, lock: bool = False) -> Iterator[Session]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            if lock:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
            yield Session(cursor, "%s")

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.pool.connection() as conn, conn.cursor() as cursor:
            yield Session(cursor, "%s")

    def prepare(self) -> None:
        """Nothing: the database exists (an operator made it) and the pool is open."""

    def unavailable(self, exc: BaseException) -> str | None:
        # SQLSTATE 53100; the other OperationalErrors are a refused or dropped connection, an admin shutdown and the
        # pool's timeout.
        if isinstance(exc, psycopg.errors.DiskFull):
            return DISK_FULL
        return "unreachable" if isinstance(exc, psycopg.OperationalError) else None

    def table_columns(self, session: Session, table: str) -> set[str]:
        rows = session.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?",
            [table],
        ).fetchall()
        return {row[0] for row in rows}

    def column_sql(self, name: str, kind: type, not_null: bool, default: object) -> str:
        sql = f"{name} {_PG_TYPES[kind]}"
        return sql + (f" NOT NULL DEFAULT {default!r}" if not_null else "")

    def create_table_sql(self, table: str) -> str:
        columns, key = SCHEMAS[table], primary_key(table)
        nullable, defaults = NULLABLE.get(table, set()), DEFAULTS.get(table, {})
        parts = [
            f"{key} BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
            if key == "id"
            else f"{key} {_PG_TYPES[columns[key]]} PRIMARY KEY"
        ]
        for name, kind in columns.items():
            if name != key:
                not_null = name not in nullable
                parts.append(f"{name} {_PG_TYPES[kind]}" + (" NOT NULL" if not_null else ""))
                if name in defaults:
                    parts[-1] += f" DEFAULT {defaults[name]!r}"
        return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(parts)})"

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self._url)
        return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def close(self) -> None:
        self.pool.close()


def open_store(config: HousingSettings, read_only: bool = False) -> LogStore:
    """The store the settings name: PostgreSQL at ``database_url``, else the SQLite file ``prediction_db``."""
    if config.database_url is not None:
        return PostgresStore(config.database_url.get_secret_value(), config.database_pool_size)
    return SQLiteStore(config.prediction_db, read_only=read_only)


# -- schema -------------------------------------------------------------------


def migrate(store: LogStore) -> list[int]:
    """Apply the migrations the log has not had, in order, under the write lock; the versions applied.

    Of several processes starting at once, one migrates and the others then find nothing to do.
    """
    store.prepare()
    with store.transaction(lock=True) as session:
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, "
            "description TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL)"
        )
        done = {row[0] for row in session.execute(f"SELECT version FROM {MIGRATIONS_TABLE}").fetchall()}  # noqa: S608  # nosec B608
        applied = []
        for migration in MIGRATIONS:
            if migration.version not in done:
                _apply(store, session, migration)
                session.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, description, ts) VALUES (?, ?, ?)",  # noqa: S608  # nosec B608
                    [migration.version, migration.description, time.time()],
                )
                applied.append(migration.version)
    return applied


def _apply(store: LogStore, session: Session, migration: Migration) -> None:
    """One migration's steps, each a no-op where a log from before versioning has it already."""
    for table in migration.recreate:
        session.execute(f"DROP TABLE IF EXISTS {table}")
    for table in migration.create:
        created = not store.table_columns(session, table)
        session.execute(store.create_table_sql(table))
        for columns, unique in INDEXES.get(table, []):
            # sqlite-utils' index names, which logs from before versioning have.
            name = f"idx_{table}_{'_'.join(columns)}"
            session.execute(
                f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {name} ON {table} ({', '.join(columns)})"
            )
        if created and migration.fill_traffic and table == TRAFFIC:
            requests = session.execute(
                f"SELECT MIN(ts), MAX(latency_ms), COUNT(*) FROM {PREDICTIONS} GROUP BY request_id"  # noqa: S608  # nosec B608
            ).fetchall()
            add_traffic(session, requests)
    for table, added in migration.add_columns.items():
        existing = store.table_columns(session, table)
        for column, value in added.items():
            if column not in existing:
                not_null = column not in NULLABLE.get(table, set())
                column_sql = store.column_sql(column, SCHEMAS[table][column], not_null, value)
                session.execute(f"ALTER TABLE {table} ADD COLUMN {column_sql}")


# -- traffic ------------------------------------------------------------------


def add_traffic(session: Session, requests: Iterable[Sequence[float]]) -> None:
    """Add (time, latency ms, houses) of each request to its minute's totals.

    Slots are written in order, so that two writers adding to the same minutes
    take their row locks in the same order (no deadlock on PostgreSQL).
    """
    slots: dict[int, list[int]] = {}
    for ts, latency_ms, houses in requests:
        totals = slots.setdefault(int(ts // TRAFFIC_SLOT_S), [0] * (2 + len(LATENCY_BUCKETS_MS)))
        totals[0] += 1
        totals[1] += int(houses)
        totals[2 + min(bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms), len(LATENCY_BUCKETS_MS) - 1)] += 1
    if not slots:
        return
    names = ["requests", "houses", *LATENCY_COLUMNS]
    updates = ", ".join(f"{name} = {TRAFFIC}.{name} + excluded.{name}" for name in names)
    sql = f"""INSERT INTO {TRAFFIC} (slot, {", ".join(names)}) VALUES ({", ".join("?" * (len(names) + 1))})
              ON CONFLICT (slot) DO UPDATE SET {updates}"""  # noqa: S608 - our names  # nosec B608
    session.executemany(sql, [(slot, *slots[slot]) for slot in sorted(slots)])
