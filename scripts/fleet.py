"""A scratch copy of the project and replicas that follow its registry: retraining and promotion, live.

The demo video retrains for real, so it works on a copy that a retraining may change without touching the
checkout: `scratch_project` copies the DVC workspace and the MLflow store (new runs and registered versions
land in the copy; earlier versions' artifacts are read from the checkout's store), and `replicas` serves its
champion from several `bentoml serve` processes, each with its own BentoML store, all sharing one prediction
log and following ``@champion`` (``HOUSING_FOLLOW_CHAMPION``), as the replicas of docs/deployment.md do.
`Load` prices houses round robin across replicas and records which version answered each request.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.paths import BIN, ROOT
from devtools.ports import free_port
from devtools.processes import stop
from devtools.serving import serve_bentoml
from devtools.waits import wait_ready

# What a run of the pipeline reads and writes: the code its stages run, their inputs and outputs, and DVC's
# state. The tests, docs and the service are not needed to retrain.
PROJECT_FILES = ("housing", "training", "data", "models", "reports", ".dvc", "dvc.yaml", "dvc.lock", "params.yaml")
MLFLOW_DB = "mlflow.db"
# How often each replica asks the registry who is champion (HOUSING_CHAMPION_POLL_S; production polls every 10 s).
CHAMPION_POLL_S = 1.0


def scratch_project(folder: Path, source: Path = ROOT) -> Path:
    """A copy of ``source``'s DVC project and MLflow store in ``folder / "project"``; returns its path."""
    project = folder / "project"
    for name in PROJECT_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        else:
            shutil.copy2(source / name, project / name)
    # The copy is no git repository: DVC works without one when told so.
    (project / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
    shutil.copy2(source / MLFLOW_DB, project / MLFLOW_DB)
    relocate_artifacts(project / MLFLOW_DB, project / "mlruns")
    return project


def relocate_artifacts(db: Path, artifacts: Path) -> None:
    """Point every experiment of the SQLite MLflow store ``db`` at its own folder under ``artifacts``.

    MLflow keeps each experiment's artifact location, an absolute path, in the store, and offers no call to
    change it: a copied store would go on writing new runs into the original's folder. Runs and versions
    already logged keep their locations, which stay readable.
    """
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE experiments SET artifact_location = ? || '/' || experiment_id", [str(artifacts.resolve())]
        )


def project_env(project: Path) -> dict[str, str]:
    """What names ``project``'s stores to a process: its MLflow store, and its DVC project for admin calls."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{(project / MLFLOW_DB).resolve()}", "HOUSING_PROJECT_DIR": str(project)}


def import_champion(home: Path, registry: dict[str, str], project: Path = ROOT) -> str:
    """Import the champion of the registry that the environment ``registry`` names (``project_env``, or a
    tracking server's) into the BentoML store at ``home``, as a host is set up; returns its version."""
    result = subprocess.run(
        [str(BIN / "python"), "-m", "scripts.import_champion", "--project-dir", str(project)],
        cwd=ROOT, env={**os.environ, **registry, "BENTOML_HOME": str(home)},
        capture_output=True, text=True, check=True, timeout=300,
    )  # nosec B603  # fmt: skip
    return str(json.loads(result.stdout.strip().splitlines()[-1])["version"])


@contextmanager
def replicas(project: Path, folder: Path, homes: list[Path], log_db: Path) -> Iterator[list[str]]:
    """One `bentoml serve` per BentoML store in ``homes``, all logging to ``log_db`` and following ``project``'s
    ``@champion``; yields their URLs once every one is ready, and stops them however the block ends."""
    env = project_env(project) | {
        "HOUSING_FOLLOW_CHAMPION": "true",
        "HOUSING_CHAMPION_POLL_S": str(CHAMPION_POLL_S),
        "HOUSING_PREDICTION_DB": str(log_db),
    }
    with ExitStack() as stack:
        started = []
        for n, home in enumerate(homes, start=1):
            port = free_port()
            server = serve_bentoml(port, folder / f"replica-{n}", BENTOML_HOME=str(home), **env)
            stack.callback(stop, server)
            started.append((f"http://127.0.0.1:{port}", server))
        for url, server in started:  # they start side by side, as a fleet's replicas do
            wait_ready(f"{url}/readyz", server)
        yield [url for url, _ in started]


def serving(urls: list[str]) -> list[str]:
    """The model version each replica's ``/health`` names."""
    return [str(httpx.get(f"{url}/health", timeout=30).json()["model_version"]) for url in urls]


@dataclass
class Load:
    """``clients`` threads, each with its keep-alive connections, pricing ``houses`` round robin over ``urls``
    until stopped, ``pause_s`` apart; records every answer."""

    urls: list[str]
    houses: list[dict[str, Any]]
    clients: int = 32
    pause_s: float = 0.0
    # (time answered, which url, status, request id, model version)
    answers: list[tuple[float, int, int, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = n
            while not self._stop.wait(self.pause_s):
                target, house = i % len(self.urls), self.houses[i % len(self.houses)]
                i += 1
                try:
                    response = http.post(f"{self.urls[target]}/predict", json=house)
                except httpx.TransportError as exc:  # a replica that was stopped refuses connections
                    self.errors.append(f"{self.urls[target]}: {type(exc).__name__}")
                    time.sleep(0.05)
                    continue
                body = response.json() if response.status_code == 200 else {}
                self.answers.append((time.time(), target, response.status_code, body.get("request_id", ""),
                                     body.get("model_version", "")))  # fmt: skip

    def run(self, during: Callable[[], Any]) -> Any:
        """Keep the clients busy while ``during`` runs; returns what it returns."""
        threads = [threading.Thread(target=self._client, args=(n,)) for n in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            return during()
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()

    def statuses(self) -> set[int]:
        return {answer[2] for answer in self.answers}

    def ok(self) -> list[str]:
        return [answer[3] for answer in self.answers if answer[2] == 200]

    def switch_s(self, replica: int, old: str, new: str, since: float) -> float:
        """Seconds from ``since`` to the last answer of ``replica`` from ``old`` (it answers only ``new`` after)."""
        mine = [a for a in self.answers if a[1] == replica]
        last_old = max(a[0] for a in mine if a[4] == old)
        if not all(a[4] == new for a in mine if a[0] > last_old) or not any(a[4] == new for a in mine):
            raise AssertionError(f"replica {replica} did not switch from v{old} to v{new} for good")
        return last_old - since
