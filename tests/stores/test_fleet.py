"""The shared-store setup end to end: two `bentoml serve` replicas, each with its own BentoML store, the
prediction log in PostgreSQL and the registry on an `mlflow server` backed by PostgreSQL with its artifacts in
SeaweedFS's S3 (devtools.local_stores, as `make shared-stores` runs them), under 32 clients.

In order, on the same fleet: a promotion mid-load reaches both replicas; PostgreSQL restarted mid-load costs no
answer and no row; feedback and views are shared; a challenger in shadow reaches both replicas and is judged on
their shared log; SIGTERM on a replica loses no row; SIGKILL's loss is measured.
The figures are printed for the report (run with -s).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from mlflow import MlflowClient

from devtools.local_stores import S3_KEYS, SharedStores, shared_stores
from devtools.ports import free_port
from housing import shadow
from housing.log.schema import PREDICTIONS
from housing.log.store import PostgresStore
from housing.params import load_params
from housing.registry import CHALLENGER_ALIAS, FRACTION_TAG, ProjectRegistry
from scripts.fleet import Load, import_champion
from service.api_models import EXAMPLE_HOUSE
from tests.service.conftest import FEEDBACK
from tests.service.server import Server, start_server
from tests.workspace import Workspace

CLIENTS = 32
MODEL = "housing-price-model"
CHAMPION_POLL_S = 1.0
RELOAD_POLL_S = 0.5
WRITER_INTERVAL_S = 0.05


@dataclass
class Fleet:
    stores: SharedStores
    servers: list[Server]
    homes: list[Path]

    def s3(self) -> Any:
        """A client of the fleet's S3 store."""
        return boto3.client("s3", endpoint_url=self.stores.s3.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip

    @property
    def registry(self) -> MlflowClient:
        return MlflowClient(self.stores.env["MLFLOW_TRACKING_URI"])

    def logged(self, request_ids: list[str]) -> set[str]:
        """Which of ``request_ids`` have their row in the shared log."""
        with psycopg.connect(self.stores.env["HOUSING_DATABASE_URL"]) as conn:
            rows = conn.execute(
                f"SELECT DISTINCT request_id FROM {PREDICTIONS} WHERE request_id = ANY(%s)",  # noqa: S608
                [request_ids],
            ).fetchall()
        return {request_id for (request_id,) in rows}

    def wait_logged(self, request_ids: list[str], timeout_s: float = 30.0) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while len(found := self.logged(request_ids)) < len(request_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        return found


def register_with_the_pipeline(workspace: Workspace, stores: SharedStores, folder: Path) -> Workspace:
    """The real pipeline's register stage against the shared stores, from a copy of the session's project.

    The run makes v1 ``@champion`` (its model and reports go to the S3 artifact store through the MLflow
    server). v2, the version the tests promote by hand, is the same logged model registered again through the
    shared registry (the pipeline refusing a model that is not better is tests/integration/test_retraining.py's).
    Then ``dvc push`` sends the project's data and models to a DVC remote in the same S3.
    """
    repo = Workspace(folder / "repo", {**workspace.env, **stores.env, "BENTOML_HOME": str(folder / "pipeline-home")},
                     "")  # fmt: skip
    shutil.copytree(workspace.path, repo.path, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "mlartifacts"))
    repo.run("dvc", "repro", "--force", "--single-item", "register")
    registry = MlflowClient(stores.env["MLFLOW_TRACKING_URI"])
    first = registry.get_model_version(MODEL, "1")
    # Read over REST a version carries no model id (MLflow 3 leaves it out of the message): its source names it.
    logged = first.source.removeprefix("models:/")
    registry.create_model_version(MODEL, first.source, first.run_id, tags=first.tags, model_id=logged)
    repo.run("dvc", "remote", "add", "--local", "--force", "shared-s3", f"{stores.dvc_bucket}/cache")
    repo.run("dvc", "remote", "modify", "--local", "shared-s3", "endpointurl", stores.env["MLFLOW_S3_ENDPOINT_URL"])
    repo.run("dvc", "push", "-r", "shared-s3")
    return repo


@pytest.fixture(scope="module")
def fleet(workspace: Workspace, champion: dict) -> Iterator[Fleet]:
    folder = Path(tempfile.mkdtemp(prefix="housing-fleet-"))
    folder.chmod(0o755)  # the postgres user works inside
    servers: list[Server] = []
    try:
        with shared_stores(folder, free_port(), free_port()) as stores:
            register_with_the_pipeline(workspace, stores, folder)
            homes = [folder / "home-a", folder / "home-b"]
            import_champion(homes[0], stores.env)
            shutil.copytree(homes[0], homes[1])  # the second host's store, set up the same way

            def serve(home: Path) -> Server:
                env = {**stores.env, "BENTOML_HOME": str(home), "HOUSING_FOLLOW_CHAMPION": "true",
                       "HOUSING_CHAMPION_POLL_S": str(CHAMPION_POLL_S), "HOUSING_RELOAD_POLL_S": str(RELOAD_POLL_S),
                       "HOUSING_WRITER_INTERVAL_S": str(WRITER_INTERVAL_S), "HOUSING_VIEW_CACHE_S": "0",
                       "HOUSING_PROJECT_DIR": str(workspace.path)}  # fmt: skip
                return start_server(folder / home.name.replace("home", "serve"), env, timeout_s=240)

            with ThreadPoolExecutor(len(homes)) as starting:  # the two replicas start at once, as in a fleet
                futures = [starting.submit(serve, home) for home in homes]
            servers.extend(future.result() for future in futures if future.exception() is None)
            for future in futures:
                future.result()  # the first failure, once every started server is in ``servers`` to be stopped
            yield Fleet(stores, servers, homes)
            for server in servers:
                server.stop(30.0)
    finally:
        for server in servers:
            server.stop(30.0)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_pipeline_registers_into_the_shared_stores(fleet: Fleet) -> None:
    registry = fleet.registry
    assert registry.get_model_version_by_alias(MODEL, "champion").version == "1"
    second = registry.get_model_version(MODEL, "2")  # the same model again: registered, not champion
    assert second.tags["data_version"] == registry.get_model_version(MODEL, "1").tags["data_version"]
    s3 = fleet.s3()
    artifacts = [item["Key"] for item in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith("/MLmodel") for key in artifacts), artifacts
    bucket = fleet.stores.dvc_bucket.removeprefix("s3://")
    pushed = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    assert pushed >= 5  # the raw data, the split, the model and its profile, in DVC's content-addressed cache


def test_a_promotion_mid_load_reaches_every_replica_once(fleet: Fleet) -> None:
    load = Load([server.url for server in fleet.servers], [EXAMPLE_HOUSE], CLIENTS)
    promoted: list[float] = []

    def switched(replica: int) -> bool:
        recent = [a for a in load.answers[-300:] if a[1] == replica and a[0] > time.time() - 1]
        return len(recent) >= 10 and all(a[4] == "2" for a in recent)

    def promote() -> None:
        time.sleep(2)
        promoted.append(time.time())
        fleet.registry.set_registered_model_alias(MODEL, "champion", "2")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (switched(0) and switched(1)):
            time.sleep(0.2)
        time.sleep(2)  # and it stays switched

    load.run(promote)
    assert load.statuses() == {200}
    bounds = []
    for replica in range(2):
        mine = [a for a in load.answers if a[1] == replica]
        assert {a[4] for a in mine} == {"1", "2"}
        first_new = min(a[0] for a in mine if a[4] == "2")
        last_old = max(a[0] for a in mine if a[4] == "1")
        assert first_new > promoted[0]
        # Its two workers switch within about a reload poll of each other, and none goes back.
        assert last_old - first_new < RELOAD_POLL_S + 1.0
        bounds.append(load.switch_s(replica, "1", "2", promoted[0]))  # raises unless it serves only v2 after
    seconds = ", ".join(f"{bound:.1f}" for bound in bounds)
    print(f"\n@champion v1 -> v2: the replicas served only v2 {seconds} s after the promotion "
          f"({len(load.answers)} answers, all 200)")  # fmt: skip
    for home in fleet.homes:  # each replica imported the new version once, from S3 through the registry
        assert len([path for path in (home / "models" / MODEL).iterdir() if path.is_dir()]) == 2
    keys = [item["Key"] for item in fleet.s3().list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert any(key.endswith("/MLmodel") for key in keys), keys


def test_a_database_restart_mid_load_costs_no_answer_and_no_row(fleet: Fleet) -> None:
    url = fleet.servers[0].url
    while_down: dict[str, int] = {}

    def restart() -> None:
        time.sleep(2)
        fleet.stores.postgres.stop()
        # What reads the log answers 503 (retry) while the database is away; pricing goes on.
        while_down["stats"] = httpx.get(f"{url}/stats", timeout=30).status_code
        feedback = {"request_id": load.ok()[0], "index": 0, "actual_price_usd": 250_000.0}
        while_down["feedback"] = httpx.post(f"{url}/feedback", json=feedback, headers=FEEDBACK, timeout=30).status_code
        fleet.stores.postgres.start()
        time.sleep(2)

    load = Load([server.url for server in fleet.servers], [EXAMPLE_HOUSE], CLIENTS)
    load.run(restart)
    assert while_down == {"stats": 503, "feedback": 503}
    assert load.statuses() == {200}
    assert not load.errors
    ok = load.ok()
    missing = set(ok) - fleet.wait_logged(ok)
    print(f"\n{len(ok)} answers from 2 replicas across a PostgreSQL restart; {len(missing)} rows missing")
    assert not missing


def test_feedback_and_views_are_shared_by_the_replicas(fleet: Fleet) -> None:
    a, b = (server.url for server in fleet.servers)
    priced = httpx.post(f"{a}/predict", json=EXAMPLE_HOUSE, timeout=30).json()
    fleet.wait_logged([priced["request_id"]])
    feedback = {"request_id": priced["request_id"], "index": 0, "actual_price_usd": 300_000.0}
    assert httpx.post(f"{b}/feedback", json=feedback, headers=FEEDBACK, timeout=30).status_code == 200
    assert httpx.post(f"{a}/feedback", json=feedback, headers=FEEDBACK, timeout=30).status_code == 409
    accuracy = [httpx.get(f"{url}/accuracy", timeout=30).json()["accuracy"] for url in (a, b)]
    assert accuracy[0] == accuracy[1]
    assert accuracy[0][0]["n"] >= 1
    stats = [httpx.get(f"{url}/stats", timeout=30).json() for url in (a, b)]
    assert stats[0]["per_hour"] == stats[1]["per_hour"]
    assert stats[0]["recent"] == stats[1]["recent"]


def test_a_shadow_reaches_every_replica_and_is_judged_on_their_shared_evidence(
    fleet: Fleet, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`housing shadow start` moves ``@challenger`` in the shared registry: both replicas follow it, price under load
    with it, the feedback either receives labels the shared evidence, and promotion refuses on too few labels."""
    registry = fleet.registry
    champion = str(registry.get_model_version_by_alias(MODEL, "champion").version)
    challenger = "1" if champion == "2" else "2"  # the same model registered twice: nothing to prove but the path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", fleet.stores.env["MLFLOW_TRACKING_URI"])
    project = ProjectRegistry(workspace.path)  # the project's names, the shared registry
    registry.set_model_version_tag(MODEL, challenger, FRACTION_TAG, "1")
    registry.set_registered_model_alias(MODEL, CHALLENGER_ALIAS, challenger)  # what `housing shadow start` sets
    urls = [server.url for server in fleet.servers]

    def shadowing(version: str | None) -> bool:
        """Whether every worker of every replica shadows with ``version``: each asks on a connection of its own, as
        many times as makes missing one of a replica's two workers unlikely (2^-7)."""
        return all(httpx.get(f"{url}/health", timeout=30).json()["shadow_challenger"] == version
                   for url in urls for _ in range(8))  # fmt: skip

    assert wait_until(lambda: shadowing(challenger), 120), [httpx.get(f"{u}/health").json() for u in urls]
    load = Load(urls, [EXAMPLE_HOUSE], 8)
    load.run(lambda: time.sleep(3))
    ok = load.ok()
    assert load.statuses() == {200}
    assert {a[1] for a in load.answers} == {0, 1}

    def shadowed(url: str) -> int:
        return int(httpx.get(f"{url}/shadow", timeout=30).json().get("houses_shadowed", 0))

    assert wait_until(lambda: shadowed(urls[0]) >= len(ok), 30), (shadowed(urls[0]), len(ok))
    fleet.wait_logged(ok[:5])
    for request_id in ok[:5]:
        sold = {"request_id": request_id, "index": 0, "actual_price_usd": 300_000.0}
        assert httpx.post(f"{urls[1]}/feedback", json=sold, headers=FEEDBACK, timeout=30).status_code == 200
    compared = [httpx.get(f"{url}/shadow", timeout=30).json() for url in urls]
    assert [c["labelled"]["houses"] for c in compared] == [5, 5]  # one log, whichever replica answers
    assert compared[0]["price_difference"]["mean_usd"] == pytest.approx(0.0, abs=1e-6)
    store = PostgresStore(fleet.stores.env["HOUSING_DATABASE_URL"])
    try:
        refused = shadow.promote(project, store, load_params(workspace.path / "params.yaml"))
    finally:
        store.close()
    assert not refused["promoted"]
    assert "only 5 shadowed houses have feedback" in refused["decision"]["reason"]
    assert str(registry.get_model_version_by_alias(MODEL, "champion").version) == champion
    print(
        f"\nshadow v{challenger} beside v{champion} on 2 replicas: {compared[0]['houses_shadowed']} houses, "
        f"challenger {compared[0]['challenger_latency']['per_house_ms']:.3f} ms a house; promotion refused"
    )
    registry.delete_registered_model_alias(MODEL, CHALLENGER_ALIAS)  # `housing shadow stop`
    assert wait_until(lambda: shadowing(None), 120)


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_sigterm_loses_no_row(fleet: Fleet) -> None:
    victim = fleet.servers[1]
    load = Load([victim.url], [EXAMPLE_HOUSE], CLIENTS)

    def terminate() -> None:
        time.sleep(4)
        os.killpg(victim.process.pid, signal.SIGTERM)
        victim.process.wait(60)

    load.run(terminate)
    ok = load.ok()
    assert load.statuses() == {200}
    missing = set(ok) - fleet.wait_logged(ok, timeout_s=5)
    print(f"\nSIGTERM: {len(ok)} answers, {len(missing)} rows missing")
    assert ok
    assert not missing


def test_sigkill_loses_at_most_the_rows_of_the_last_writes(fleet: Fleet) -> None:
    victim = fleet.servers[0]
    load = Load([victim.url], [EXAMPLE_HOUSE], CLIENTS)
    killed: list[float] = []

    def kill() -> None:
        time.sleep(4)
        killed.append(time.time())
        victim.kill()  # the server and its workers, as a crash of its container
        victim.process.wait(60)

    load.run(kill)
    ok = load.ok()
    logged = fleet.wait_logged(ok, timeout_s=5)
    lost = [a[0] for a in load.answers if a[2] == 200 and a[3] not in logged]
    window_ms = (killed[0] - min(lost)) * 1000 if lost else 0.0
    rate = len(ok) / max(1e-9, killed[0] - min(a[0] for a in load.answers))
    print(f"\nSIGKILL: {len(ok)} answers ({rate:.0f}/s), {len(lost)} rows lost, answered in the last "
          f"{window_ms:.0f} ms before the kill (writer interval {WRITER_INTERVAL_S * 1000:.0f} ms)")  # fmt: skip
    # Only rows answered just before the kill can be lost: those queued, or in the transaction being written.
    assert window_ms <= 1000 * 10 * WRITER_INTERVAL_S
