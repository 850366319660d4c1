"""Throwaway local stores for trying the shared-store setup and for the tests: a PostgreSQL cluster.

PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the
``postgres`` user (``runuser``) in a folder it owns (as anyone else, as that
user). The server listens on a loopback port and trusts local connections: it is
for one machine's experiments and tests, never for production.
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

import psycopg

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
    """One PostgreSQL cluster in ``folder`` (a new temporary one by default) on ``port`` (a free one).

    ``durable=False`` turns fsync off: faster, and fine for data that may be lost (tests).
    """

    def __init__(self, folder: Path | None = None, port: int | None = None, durable: bool = True) -> None:
        self.durable = durable
        self.folder = folder or Path(tempfile.mkdtemp(prefix="housing-pg-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = self.folder / "data"
        self.port = port or free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, PG_USER, PG_USER)
        if not (self.data / "PG_VERSION").exists():
            self._as_postgres(pg_bin("initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                              "--no-sync")  # fmt: skip

    def _as_postgres(self, *argv: str) -> None:
        command = ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else list(argv)
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)  # noqa: S603  # nosec B603 - fixed argv

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off"
        self._as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                          "-w", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server at once and delete its folder."""
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
