"""Two `bentoml serve` replicas, each with its own BentoML store, follow the registry's @champion under 32 clients.

The registry is a copy of the session pipeline's MLflow store (so other tests keep
their champion), where a second version of the champion's model is registered and
then promoted mid-load. Printed for the report: how long after the promotion each
replica served only the new version.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from operations.local_stores import PostgresServer
from service.api_models import EXAMPLE_HOUSE
from tests.conftest import tracking_store
from tests.service.server import Server, start_server
from tests.workspace import BIN, ROOT, Workspace

CLIENTS = 32
POLL_S = 1.0
RELOAD_POLL_S = 0.5
MODEL = "housing-price-model"


@dataclass
class Fleet:
    client: MlflowClient
    servers: list[Server]
    homes: list[Path]


def import_champion(home: Path, uri: str) -> None:
    """Put the registry's champion into the BentoML store at ``home``, as a replica's host would be set up."""
    code = ("from mlflow import MlflowClient; from housing.registry import champion_version, import_version\n"
            "from service.champion_follower import Registered\n"
            f"reg = Registered({MODEL!r}, 'champion', {MODEL!r}); client = MlflowClient({uri!r})\n"
            "import_version(client, reg, str(champion_version(client, reg).version))")  # fmt: skip
    env = {"BENTOML_HOME": str(home), "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:/usr/bin:/bin"}
    subprocess.run([str(BIN / "python"), "-c", code], cwd=ROOT, env=env, check=True, timeout=300)


@pytest.fixture(scope="module")
def fleet(
    postgres: PostgresServer, workspace: Workspace, champion: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("follow")
    shutil.copy(workspace.path / "mlflow.db", root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    current = client.get_model_version_by_alias(MODEL, "champion")
    # A second version of the same model: what the next promotion will point at. (MLflow resolves the
    # source's logged model through the default store.)
    with tracking_store(uri):
        client.create_model_version(MODEL, current.source, run_id=current.run_id, tags=dict(current.tags))
    database = postgres.new_schema()
    homes, servers = [root / "home-a", root / "home-b"], []
    try:
        for home in homes:
            import_champion(home, uri)
            env = {"BENTOML_HOME": str(home), "MLFLOW_TRACKING_URI": uri, "HOUSING_DATABASE_URL": database,
                   "HOUSING_FOLLOW_CHAMPION": "true", "HOUSING_CHAMPION_POLL_S": str(POLL_S),
                   "HOUSING_RELOAD_POLL_S": str(RELOAD_POLL_S), "HOUSING_PROJECT_DIR": str(workspace.path)}  # fmt: skip
            servers.append(start_server(root / home.name.replace("home", "serve"), env, timeout_s=180))
        yield Fleet(client, servers, homes)
    finally:
        for server in servers:
            server.stop(30.0)


def test_a_promotion_mid_load_reaches_every_replica_once_without_an_error(fleet: Fleet, champion: dict) -> None:
    old = champion["version"]
    new = max(int(v.version) for v in fleet.client.search_model_versions(f"name = '{MODEL}'"))
    answers: list[tuple[float, int, int, str]] = []  # (time answered, replica, status, model version)
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                replica = n % len(fleet.servers)
                response = http.post(f"{fleet.servers[replica].url}/predict", json=EXAMPLE_HOUSE)
                version = response.json().get("model_version", "") if response.status_code == 200 else ""
                answers.append((time.time(), replica, response.status_code, version))

    def switched(replica: int, since: float) -> bool:
        recent = [a for a in answers[-200:] if a[1] == replica and a[0] > since]
        return len(recent) >= 10 and all(a[3] == str(new) for a in recent)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        promoted = time.time()
        fleet.client.set_registered_model_alias(MODEL, "champion", str(new))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(switched(r, time.time() - 1) for r in range(2)):
            time.sleep(0.2)
        time.sleep(2)  # and it stays switched
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {a[2] for a in answers} == {200}
    bounds = []
    for replica in range(2):
        mine = [a for a in answers if a[1] == replica]
        first_new = min(a[0] for a in mine if a[3] == str(new))
        last_old = max(a[0] for a in mine if a[3] == old)
        assert {a[3] for a in mine} == {old, str(new)}
        assert first_new > promoted
        # Its two workers switch within a reload poll of each other, and none goes back.
        assert last_old - first_new < RELOAD_POLL_S + 1.0
        assert all(a[3] == str(new) for a in mine if a[0] > last_old)
        bounds.append(last_old - promoted)
    seconds = ", ".join(f"{bound:.1f}" for bound in bounds)
    print(
        f"\n@champion v{old} -> v{new}: replicas served only v{new} {seconds} s after the promotion "
        f"({len(answers)} answers, all 200)"
    )
    # Each replica imported the new version once into its own store.
    for home in fleet.homes:
        assert len([p for p in (home / "models" / MODEL).iterdir() if p.is_dir()]) == 2
