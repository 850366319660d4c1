"""Real database engines for the tests: one test's prediction-log database on SQLite or PostgreSQL.

The PostgreSQL server (devtools.local_stores) is started once per session;
each test gets a schema of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.local_stores import PostgresServer
from housing.log.store import LogStore, PostgresStore, SQLiteStore
from housing.log.writer import PredictionLog


class LogDatabase:
    """One test's prediction-log database on one engine; each :meth:`store` is a fresh connection to it."""

    def __init__(self, engine: str, folder: Path, server: PostgresServer | None) -> None:
        self.engine = engine
        self.folder = folder
        self.url = server.new_schema() if server is not None else ""
        self._stores: list[LogStore] = []

    def store(self) -> LogStore:
        store: LogStore = PostgresStore(self.url) if self.url else SQLiteStore(self.folder / "p.db")
        self._stores.append(store)
        return store

    def log(self, **options: Any) -> PredictionLog:
        """A prediction log (writer thread running) on a fresh store of this database."""
        return PredictionLog(self.store(), dead_letter_path=self.folder / "deadletter.jsonl", **options)

    def count(self, table: str) -> int:
        with self.store().reading() as session:
            return int(session.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - test names

    def close(self) -> None:
        for store in self._stores:
            store.close()
