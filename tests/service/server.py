"""A real `bentoml serve` process for tests: started, probed until ready, stopped with SIGTERM."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from devtools.ports import free_port
from devtools.processes import stop
from devtools.serving import private_home
from devtools.waits import wait_ready
from tests.service.conftest import FEEDBACK_TOKEN
from tests.workspace import BIN, ROOT


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    db: Path
    log_dir: Path
    output: Path

    def processes(self) -> list[psutil.Process]:
        """The server's process and its workers (BentoML starts them in process groups of their own)."""
        try:
            return [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL to every process of the server, as when its container or host dies: a crash, no shutdown.

        A signal to the server's process group would leave its workers serving.
        """
        for process in self.processes():
            with suppress(psutil.NoSuchProcess):
                process.kill()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Graceful shutdown, as an orchestrator does it (devtools.processes.stop): None when it had to be killed."""
        return stop(self.process, timeout_s)


# The session's own settings a server keeps: the data's source and the shared cache of compiled forests.
INHERITED_SETTINGS = ("HOUSING_DATA_SOURCE", "HOUSING_COMPILED_DIR")


def inherited_environment() -> dict[str, str]:
    """This process's environment without the service's settings: the in-process service of the session
    (tests/service/conftest.py ``client``) keeps its own in the environment, and a server gets only its test's."""
    return {
        key: value
        for key, value in os.environ.items()
        if key in INHERITED_SETTINGS or not key.startswith(("HOUSING_", "PROMETHEUS_MULTIPROC_DIR"))
    }


def start_server(
    root: Path,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
    command: Sequence[str] | None = None,
    cwd: Path = ROOT,
) -> Server:
    """`bentoml serve` of the project's service, from the project root, on a free port.

    ``command`` (run in ``cwd``) replaces that invocation: it must listen on ``BENTOML_PORT``, as ``bentoml serve``
    does when no ``--port`` is given. The server has a BentoML home of its own (``private_home``) that sees the
    session's stores, unless ``extra_env`` names one: the other worker's servers start while this one serves.
    """
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **inherited_environment(),
        "BENTOML_HOME": (extra_env or {}).get("BENTOML_HOME") or private_home(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOUSING_PREDICTION_DB": str(root / "predictions.db"),
        "HOUSING_LOG_DIR": str(root / "log"),
        "HOUSING_MAX_BATCH_SIZE": "500",
        "HOUSING_MAX_EXPLAIN_HOUSES": "200",
        "HOUSING_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        "BENTOML_PORT": str(port),
        **(extra_env or {}),
    }
    output = root / "server.log"
    process = subprocess.Popen(
        command
        or [str(BIN / "bentoml"), "serve", "service.service:HousePricer", "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, root / "predictions.db", root / "log", output)
    try:
        wait_ready(f"{server.url}/readyz", process, timeout_s, log=output)
    except TimeoutError:
        server.stop()
        raise
    return server
