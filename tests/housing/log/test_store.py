"""The log's stores: many workers starting at once on a new log, on each engine (``log_db``) and on SQLite alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from housing.log.schema import MIGRATIONS
from housing.log.store import LogStore, SQLiteStore, migrate
from tests.stores.engines import LogDatabase

Store = TypeVar("Store", bound=LogStore)
T = TypeVar("T")


def at_once(step: Callable[[Store], T], stores: Sequence[Store]) -> tuple[list[T], list[str]]:
    """``step`` on every store from a thread of its own, released together, as workers start: results, errors."""
    start, results, errors = threading.Barrier(len(stores)), [], []

    def run(store: Store) -> None:
        start.wait()
        try:
            results.append(step(store))
        except Exception as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_workers_starting_at_once_on_a_new_sqlite_log_all_switch_it_to_wal(tmp_path: Path) -> None:
    # Connections switching a new file to WAL at once: one used to get "database is locked" (about 2% of
    # rounds here), because that switch fails at once instead of waiting out the busy timeout.
    for round_ in range(150):
        stores = [SQLiteStore(tmp_path / f"round-{round_}.db") for _ in range(4)]
        _, errors = at_once(SQLiteStore.prepare, stores)
        assert errors == [], f"round {round_}"
        for store in stores:
            store.close()


def test_migrations_run_once_however_many_workers_start(log_db: LogDatabase) -> None:
    applied, errors = at_once(migrate, [log_db.store() for _ in range(4)])
    assert errors == []
    assert sorted(applied) == [[], [], [], [m.version for m in MIGRATIONS]]
    assert migrate(log_db.store()) == []
