"""Real database engines for the tests: a throwaway PostgreSQL cluster from Debian's packages.

PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the
``postgres`` user (``runuser``) in a temporary folder it owns (as anyone else,
as that user); the server listens on a free loopback port and trusts local
connections. Each test gets a schema of its own: :class:`LogDatabase`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

from housing.log_store import LogStore, PostgresStore, SQLiteStore
from service.prediction_log import PredictionLog

PG_USER = "postgres"


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them under /usr/lib/postgresql/<major>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    program = str(found[-1]) if found else shutil.which(name)
    if program is None:
        raise FileNotFoundError(f"{name}: PostgreSQL's server is not installed (`make tools` installs it)")
    return program


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, started and stopped by the tests."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="housing-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER, PG_USER)
        self._as_postgres(pg_bin("initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                          "--no-sync")  # fmt: skip

    def _as_postgres(self, *argv: str) -> None:
        command = ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else list(argv)
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                          "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def new_schema(self) -> str:
        """A URL whose connections work in a fresh, empty schema: one test's own database."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{self.url}?options=-csearch_path%3D{schema}"


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
