"""The image itself, built by `make image`'s code path (scripts/image.py) and run as production runs it.

The session's bento is containerized with the backend that exists (docker if its engine answers, else podman)
and started locked down: read-only root file system, tmpfs only where BentoML writes, the prediction log on a
mounted host folder, explicit ulimits, no capabilities, non-root. Then: /readyz, /predict (equal to MLflow's
pyfunc of the champion) and /metrics answer; it runs as a non-root user; the image's own HEALTHCHECK command
succeeds inside it; it explains at the price it serves; it compiles its forests and serves them; SIGTERM stops it
within the grace period with every prediction on the mounted volume. A second container, on the host's network,
writes its prediction log to PostgreSQL and follows a promotion in an MLflow registry. Image size and cold start
(container start to /readyz 200) go to reports/image.json.

Where no registry is reachable the first run also builds the offline stand-in for the base image
(scripts/base_image.sh, about a minute) and the image without a layer cache (about 2 minutes on 2 cores);
later runs reuse both, and the module then takes 2 to 5 minutes with the session's pipeline and `bentoml build`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from devtools.houses import request_records
from devtools.local_stores import PostgresServer, mlflow_server
from devtools.ports import free_port
from devtools.processes import stop
from housing.log.schema import PREDICTIONS
from scripts import image as image_script
from service.api_models import EXAMPLE_HOUSE
from tests.service.test_explain import assert_sums_to_price
from tests.workspace import BIN, ROOT, Workspace

pytestmark = pytest.mark.integration

HOME = "/home/bentoml"
# What BentoML writes at start and while serving (as deploy/docker-compose.yml mounts it); nothing else is writable.
TMPFS = [f"{HOME}/bentos", f"{HOME}/models", f"{HOME}/envs", f"{HOME}/tmp", f"{HOME}/prometheus_multiproc_dir", "/tmp"]
VAR = f"{HOME}/var"  # the data volume: prediction log and request logs
ULIMITS = ["nofile=1024:1024", "nproc=1024:1024"]
MAX_IMAGE_BYTES = 700e6  # what every pull and every new pod pays for, as the engine reports it
GRACE_S = 30  # compose's stop_grace_period, docs/deployment.md's termination grace period
READY_TIMEOUT_S = 180
# The champion's two forests compile in the background on the data volume: about 75 s of a core on a quiet machine.
COMPILE_TIMEOUT_S = 600
# The registry the replica follows, as params.yaml names it, and how long a promotion may take to reach it.
MODEL, ALIAS = "housing-price-model", "champion"
FOLLOW_TIMEOUT_S = 120
# Where the figures go: a run that is meant to refresh reports/image.json names it, e.g.
# IMAGE_REPORT=reports/image.json make test PYTEST_ARGS=tests/delivery/test_image.py; other runs leave it alone.
REPORT = os.environ.get("IMAGE_REPORT")


def engine_run(engine: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [engine, *args], env=image_script.engine_env(), capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def engine() -> str:
    found = image_script.backend()
    if found is None:
        pytest.skip("neither a docker engine nor podman can run a container here (`make tools` installs podman)")
    return found


@pytest.fixture(scope="module")
def built(engine: str, bento: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`python -m scripts.image` on the session's bento: what `make image` runs after `bentoml build`."""
    log = tmp_path_factory.mktemp("image-build") / "build.log"
    command = [str(BIN / "python"), "-m", "scripts.image", "--bento", f"{bento.parent.name}:{bento.name}"]
    with log.open("w") as out:
        done = subprocess.run(
            [*command, "--backend", engine], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    output = log.read_text()
    assert done.returncode == 0, output[-5000:]
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["tags"] == [f"{bento.parent.name}:{bento.name}", f"{bento.parent.name}:latest"]
    return dict(summary)


@dataclass
class Container:
    engine: str
    name: str
    url: str
    volume: Path
    cold_start_s: float = 0.0
    load_at_start: float = 0.0  # the host's 1-minute load average as the container started
    stop_s: float | None = None
    request_ids: list[str] = field(default_factory=list)

    def predict(self, http: httpx.Client, house: dict) -> dict:
        answer = http.post("/predict", json=house)
        assert answer.status_code == 200, answer.text
        body = dict(answer.json())
        self.request_ids.append(body["request_id"])
        return body

    def logs(self) -> str:
        done = engine_run(self.engine, "logs", self.name, check=False)
        return (done.stdout + done.stderr)[-5000:]


def data_volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host folder for the container's data volume (VAR)."""
    volume = tmp_path_factory.mktemp("image-var")
    volume.chmod(0o777)  # the image's user (UID 1034) writes there, whatever the host's UID mapping
    return volume


@contextlib.contextmanager
def running(engine: str, image: str, volume: Path, url: str, *options: str) -> Iterator[Container]:
    """``image`` started as production starts it, ``volume`` its data volume, until /readyz at ``url`` answers 200.

    ``options`` say how it is reached (a published port, or the host's network) and what else it is told.
    """
    name = f"housing-image-test-{uuid.uuid4().hex[:8]}"
    command = ["run", "-d", "--name", name, "--read-only"]  # as the image's own USER
    command += [arg for path in TMPFS for arg in ("--tmpfs", f"{path}:size=256m")]
    command += ["-v", f"{volume}:{VAR}", "-e", f"HOUSING_PREDICTION_DB={VAR}/predictions.db"]
    command += [arg for limit in ULIMITS for arg in ("--ulimit", limit)]
    command += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges", *options]
    started = Container(engine, name, url, volume)
    try:
        started.load_at_start, begun = os.getloadavg()[0], time.monotonic()
        engine_run(engine, *command, image, timeout=120)
        deadline = begun + READY_TIMEOUT_S
        with httpx.Client(base_url=url, timeout=5) as http:
            while True:
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                state = engine_run(engine, "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                assert state == "running", f"the container is {state}:\n{started.logs()}"
                assert time.monotonic() < deadline, f"not ready after {READY_TIMEOUT_S} s:\n{started.logs()}"
                time.sleep(0.25)
        started.cold_start_s = round(time.monotonic() - begun, 2)
        yield started
    finally:
        engine_run(engine, "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def container(engine: str, built: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image on its own: its port published on 127.0.0.1, the prediction log in SQLite on the data volume."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(engine, built["tags"][0], data_volume(tmp_path_factory), url, "-p", f"127.0.0.1:{port}:3000") as it:
        yield it


def test_serves_ready_predictions_equal_to_pyfunc_and_metrics(
    container: Container,
    champion: dict,
    workspace: Workspace,
    test_rows: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = test_rows.head(5)
    with httpx.Client(base_url=container.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        answers = [container.predict(http, house) for house in request_records(rows)]
        metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text
    assert {answer["model_version"] for answer in answers} == {champion["version"]}
    monkeypatch.chdir(workspace.path)  # the workspace's default store: sqlite:///mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    pyfunc = mlflow.pyfunc.load_model(f"models:/housing-price-model/{champion['version']}")
    np.testing.assert_allclose([answer["price_usd"] for answer in answers], pyfunc.predict(rows), rtol=1e-10)


def test_runs_as_non_root_on_a_read_only_root(container: Container) -> None:
    uid = engine_run(container.engine, "exec", container.name, "id", "-u").stdout.strip()
    assert uid.isdigit()
    assert int(uid) != 0
    read_only = engine_run(container.engine, "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name)
    assert read_only.stdout.strip() == "true"
    outside = engine_run(container.engine, "exec", container.name, "touch", f"{HOME}/bento/written", check=False)
    assert outside.returncode != 0
    assert "Read-only file system" in outside.stderr
    engine_run(container.engine, "exec", container.name, "touch", f"{VAR}/written")  # the data volume is writable
    assert (container.volume / "written").is_file()


def healthcheck(engine: str, image: str) -> list[str]:
    """The image's HEALTHCHECK as a command to exec (docker-format images keep it; see scripts/image.py)."""
    inspected = engine_run(engine, "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image)
    config = json.loads(inspected.stdout)
    assert config, f"{image} has no HEALTHCHECK"
    kind, *test = config["Test"]
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", test[0]]
    assert kind == "CMD", config
    return list(test)


def test_healthcheck_command_succeeds_inside(container: Container, built: dict) -> None:
    # podman runs HEALTHCHECK from systemd timers, absent here: run the image's own check with exec instead.
    command = healthcheck(container.engine, built["tags"][0])
    assert "/readyz" in " ".join(command)
    probe = engine_run(container.engine, "exec", container.name, *command, timeout=30, check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_explains_at_the_price_it_serves(container: Container, test_rows: pd.DataFrame) -> None:
    house = request_records(test_rows.head(1))[0]
    with httpx.Client(base_url=container.url, timeout=30) as http:
        assert http.get("/health").json()["explain_runtime"] == "pred_contrib"
        (explanation,) = http.post("/explain", json=house).json()["explanations"]
        assert explanation["price_usd"] == container.predict(http, house)["price_usd"]
    assert_sums_to_price(explanation)


def test_compiles_its_forests_for_this_machine_and_serves_them(container: Container) -> None:
    """Compiled forests are native code, so the image carries none: it compiles its model's two forests at first
    start, onto the data volume, while the booster serves, then serves them (llvmlite's library works, stripped)."""
    deadline = time.monotonic() + COMPILE_TIMEOUT_S
    with httpx.Client(base_url=container.url, timeout=30) as http:
        while True:
            health = http.get("/health").json()
            if health["model_runtime"] == health["interval_runtime"] == "lleaves":
                break
            problems = [health["model_runtime_problem"] or "", health["interval_runtime_problem"] or ""]
            assert not any(problem.startswith("failed") for problem in problems), health
            assert time.monotonic() < deadline, f"not compiled after {COMPILE_TIMEOUT_S} s: {health}"
            time.sleep(1)
    assert len(list((container.volume / "compiled").glob("forest-*.so"))) == 2


def test_sigterm_stops_within_grace_with_every_prediction_on_the_volume(
    container: Container, test_rows: pd.DataFrame
) -> None:
    with httpx.Client(base_url=container.url, timeout=30) as http:
        for house in request_records(test_rows.tail(5)):
            container.predict(http, house)
    stopping = time.monotonic()
    engine_run(container.engine, "stop", "-t", str(GRACE_S), container.name, timeout=GRACE_S + 30)
    container.stop_s = round(time.monotonic() - stopping, 2)
    assert container.stop_s < GRACE_S
    state = engine_run(container.engine, "inspect", "--format", "{{.State.ExitCode}}", container.name).stdout
    assert state.strip() == "0", container.logs()  # a clean exit, not the SIGKILL at the end of the grace period
    with sqlite3.connect(container.volume / "predictions.db") as db:
        logged = {row[0] for row in db.execute(f"SELECT request_id FROM {PREDICTIONS}")}  # noqa: S608  # nosec B608
    assert len(container.request_ids) >= 10
    assert set(container.request_ids) <= logged


def test_reports_image_size_and_cold_start(container: Container, built: dict) -> None:
    size = image_script.image_size(container.engine, built["tags"][0])
    figures = {
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": built["backend"],
        "base": built["base"],
        "offline_stand_in_base": built["stand_in_base"],
        "image_size_bytes": size,
        "image_size_mb": round(size / 1e6, 1),
        "base_size_mb": round(image_script.image_size(container.engine, built["base"]) / 1e6, 1),
        "cold_start_s": container.cold_start_s,
        "load_average_at_start": round(container.load_at_start, 2),  # the 1-minute load; the machine has "cpus"
        "base_s": built["base_seconds"],  # 0 when the base (or its stand-in) was already local
        "build_s": built["build_seconds"],
        "stop_s": container.stop_s,
        "cpus": os.cpu_count(),
    }
    print(f"\nimage {built['tags'][0]}: {figures['image_size_mb']} MB, cold start {container.cold_start_s} s")
    if REPORT:
        (ROOT / REPORT).write_text(json.dumps(figures, indent=2) + "\n")
    assert 0 < container.cold_start_s < READY_TIMEOUT_S
    assert size <= MAX_IMAGE_BYTES, f"the image is {size / 1e6:.1f} MB, over {MAX_IMAGE_BYTES / 1e6:.0f} MB"


@pytest.fixture(scope="module")
def registry(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` on a copy of the session's registry: what a replica that follows the champion asks."""
    folder = tmp_path_factory.mktemp("image-registry")
    shutil.copy(workspace.path / "mlflow.db", folder / "mlflow.db")  # the session's own stays as the pipeline left it
    port = free_port()
    server = mlflow_server(folder, f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"), None, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server, timeout_s=10)


def promote_a_copy(registry: str, version: str, staging: Path) -> str:
    """The model of ``version`` registered again, its files served by the registry's server as a shared registry's
    are, and made ``@champion``: the new version's number."""
    client = MlflowClient(registry)
    first = client.get_model_version(MODEL, version)
    where = client.get_model_version_download_uri(MODEL, version)  # not models:/ (housing.registry.import_version)
    files = download_artifacts(artifact_uri=where, dst_path=str(staging), tracking_uri=registry)
    run = client.create_run(client.create_experiment(f"image-test-{uuid.uuid4().hex[:8]}"))
    client.log_artifacts(run.info.run_id, files, "model")
    client.set_terminated(run.info.run_id)
    second = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run.info.run_id, tags=first.tags)
    client.set_registered_model_alias(MODEL, ALIAS, second.version)
    return str(second.version)


@dataclass
class Replica:
    """The image started as a replica of a fleet: its log in ``database``, following the champion of ``registry``."""

    container: Container
    database: str
    registry: str


@pytest.fixture(scope="module")
def replica(
    engine: str, built: dict, registry: str, postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replica]:
    """A second container, on the host's network: the prediction log in PostgreSQL, the champion of the registry
    followed (polled every second), the booster serving (the compiled forests are tested above)."""
    database, port = postgres.new_schema(), free_port()
    url = f"http://127.0.0.1:{port}"
    told = {"BENTOML_PORT": str(port), "HOUSING_DATABASE_URL": database, "MLFLOW_TRACKING_URI": registry,
            "HOUSING_FOLLOW_CHAMPION": "true", "HOUSING_CHAMPION_POLL_S": "1", "HOUSING_RELOAD_POLL_S": "0.5",
            "HOUSING_COMPILED_DIR": ""}  # fmt: skip
    options = ["--network", "host", *(arg for key, value in told.items() for arg in ("-e", f"{key}={value}"))]
    with running(engine, built["tags"][0], data_volume(tmp_path_factory), url, *options) as container:
        yield Replica(container, database, registry)


def test_logs_to_postgresql(replica: Replica, champion: dict, test_rows: pd.DataFrame) -> None:
    """Every answered prediction has its row in PostgreSQL (the image's own driver, libpq included), none in SQLite."""
    container = replica.container
    with httpx.Client(base_url=container.url, timeout=30) as http:
        answers = [container.predict(http, house) for house in request_records(test_rows.head(3))]
    assert {answer["model_version"] for answer in answers} == {champion["version"]}
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while (logged := logged_requests(replica.database, container.request_ids)) != set(container.request_ids):
        assert time.monotonic() < deadline, f"{len(logged)} of {len(container.request_ids)} rows in PostgreSQL"
        time.sleep(0.5)
    assert not (container.volume / "predictions.db").exists()


# `bentoml serve` of a bento keeps its model store in the bento (/home/bentoml/bento/models), on the read-only root:
# the workers move to the tmpfs at /home/bentoml/models (service/model_store.py), where the follower imports.
def test_follows_a_promotion_in_the_registry(
    replica: Replica, champion: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A promotion reaches the replica: it imports the new version over HTTP and serves it without a restart."""
    container = replica.container
    promoted = promote_a_copy(replica.registry, champion["version"], tmp_path_factory.mktemp("image-promoted"))
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    with httpx.Client(base_url=container.url, timeout=30) as http:
        before = container.predict(http, EXAMPLE_HOUSE)
        while (after := container.predict(http, EXAMPLE_HOUSE))["model_version"] != promoted:
            errors = http.get("/health").json()["model_errors"]
            assert not errors, f"the replica still serves v{after['model_version']}: {errors}"
            assert time.monotonic() < deadline, f"still v{after['model_version']}:\n{container.logs()}"
            time.sleep(0.5)
    assert after["price_usd"] == before["price_usd"]  # the same model, under its new version


def logged_requests(database: str, request_ids: list[str]) -> set[str]:
    """Which of ``request_ids`` have their row in the prediction log in PostgreSQL."""
    with psycopg.connect(database) as conn:
        rows = conn.execute(f"SELECT request_id FROM {PREDICTIONS} WHERE request_id = ANY(%s)",  # noqa: S608  # nosec B608
                            [request_ids]).fetchall()  # fmt: skip
    return {request_id for (request_id,) in rows}
