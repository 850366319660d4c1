"""Shared fixtures: the real dataset (or a seeded sample of it), typed params, and a small trained pipeline.

Every test shares one throwaway BentoML home, set before anything touches the
store (BentoML reads ``BENTOML_HOME`` once per process): tests never see or
change the user's own models.

`make test` runs on two pytest-xdist workers, one per core. They share one area for the run (the BentoML
home, the compiled forests, the pipeline's workspace and the bento): the first worker to need the pipeline
runs it, the other waits for it and reads it (:func:`run_once`). Each module runs whole on one worker (its
module fixtures start once), and the modules are handed out heaviest first (:func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from filelock import FileLock

from devtools.local_stores import PostgresServer
from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.params import Params, load_params
from housing.settings import HousingSettings
from tests.stores.engines import LogDatabase
from tests.synthetic import synthetic_housing
from tests.workspace import BIN, ROOT, Workspace, ran_pipeline, run_pipeline
from training.ingest import ingest

# The test run's shared area: made by the controller (or the only process), inherited by the xdist workers.
SHARED_AREA = "HOUSING_TESTS_SHARED_AREA"


# Fixtures that run the real pipeline, read the real data, or start a server or a system tool: a test that
# uses one is an integration test, whatever its module says (`make test-fast` runs the others).
REAL_FIXTURES = frozenset(
    {
        "housing_csv",
        "housing",
        "workspace",
        "champion",
        "test_rows",
        "bento",
        "service_env",
        "client",
        "stack",
        "postgres",
        "stores",
    }
)


def is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def shared_area() -> Path:
    return Path(os.environ[SHARED_AREA])


def pytest_configure(config: pytest.Config) -> None:
    if not is_worker():
        os.environ[SHARED_AREA] = tempfile.mkdtemp(prefix="housing-tests-")
    os.environ["BENTOML_HOME"] = str(shared_area() / "bentoml")
    # Every server of the run shares one cache of compiled forests: each model compiles once.
    os.environ["HOUSING_COMPILED_DIR"] = str(shared_area() / "compiled")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not is_worker():
        shutil.rmtree(shared_area(), ignore_errors=True)


@contextmanager
def run_once(name: str) -> Iterator[Path]:
    """The run's shared folder ``name``, held by one test process at a time: the first fills it, the next reads it."""
    folder = shared_area() / name
    with FileLock(f"{folder}.lock"):
        folder.mkdir(exist_ok=True)
        yield folder


@contextmanager
def machine_share(alone: bool) -> Iterator[None]:
    """Hold the machine with the other test processes (``alone`` False), or by itself until every other test
    process's test has ended and while none starts (``alone``): a test that measures time must not share the cores.

    A reader-writer lock on two files: a test that runs alone first closes the gate (no test passes it meanwhile),
    then waits for the tests in progress; the others pass the gate only to take their share.
    """
    gate, share = ((shared_area() / name).open("a+") for name in ("machine.gate", "machine.share"))
    try:
        fcntl.flock(gate, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(share, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield
    finally:
        gate.close()
        share.close()  # closing a file releases its locks


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist, each test (with the fixtures it sets up and tears down) holds its share of the machine, or the
    whole machine if it is marked ``timing``."""
    if not is_worker():
        return (yield)
    with machine_share(alone=item.get_closest_marker("timing") is not None):
        return (yield)


def module_of(nodeid: str) -> str:
    """The unit of work of a test: its module; tests/monitoring's modules are one (they share one server)."""
    module = nodeid.split("::")[0]
    return "tests/monitoring" if module.startswith("tests/monitoring/") else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Each module runs whole on one worker, so its module fixtures start once; modules go out in collection order
    (:func:`pytest_collection_modifyitems`: heaviest first). xdist's loadscope, grouping by :func:`module_of`."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return module_of(nodeid)

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the integration tests, and order the modules for the xdist workers, heaviest first.

    The order: one module that needs the session's pipeline (its worker runs the pipeline), then the integration
    modules that do not (the other worker's work meanwhile), then the pipeline's other users, then the unit tests,
    which fill the end of the run in small pieces.
    """
    tiers: dict[str, int] = {}
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if REAL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
        tier = 0 if "workspace" in fixtures else 1 if item.get_closest_marker("integration") else 2
        module = module_of(item.nodeid)
        tiers[module] = min(tiers.get(module, 2), tier)
    first_user = next((module for module, tier in tiers.items() if tier == 0), None)
    rank = {module: (-1 if module == first_user else 1 if tier == 0 else 0 if tier == 1 else 2)
            for module, tier in tiers.items()}  # fmt: skip
    items.sort(key=lambda item: rank[module_of(item.nodeid)])


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """Use the MLflow store ``uri`` for a while, then leave MLflow as it was.

    ``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI, which every later
    subprocess inherits: restoring the resolved previous URI would point them all
    at the repository's own store, so the variable itself is restored.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (about 3 s to start); tests take a schema each."""
    server = PostgresServer(durable=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


# Every prediction-log engine; PostgreSQL's runs are integration tests (they start a server).
LOG_ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


@pytest.fixture(params=LOG_ENGINES)
def log_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LogDatabase]:
    """An empty prediction-log database of its own on each engine: SQLite, then PostgreSQL."""
    server = request.getfixturevalue("postgres") if request.param == "postgres" else None
    database = LogDatabase(request.param, tmp_path, server)
    yield database
    database.close()


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def housing_csv(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real dataset, fetched once per session through the project's own ingest step.

    The source is the one the pipeline uses (HOUSING_DATA_SOURCE, else params.yaml);
    the Makefile points it at the offline copy when there is one.
    """
    target = tmp_path_factory.mktemp("data") / "housing.csv"
    ingest(params.data_source(HousingSettings()), target, params.data.download_timeout_s)
    return target


@pytest.fixture(scope="session")
def housing(housing_csv: Path) -> pd.DataFrame:
    return pd.read_csv(housing_csv)


@pytest.fixture(scope="session")
def sample() -> pd.DataFrame:
    """2,000 synthetic block groups (tests.synthetic): enough for every model family, fast to fit."""
    return synthetic_housing(2000, seed=0)


@pytest.fixture(scope="session")
def X_sample(sample: pd.DataFrame) -> pd.DataFrame:
    return sample[list(FEATURE_COLUMNS)]


@pytest.fixture(scope="session")
def y_sample(sample: pd.DataFrame) -> pd.Series:
    return sample[TARGET_COLUMN]


@pytest.fixture(scope="session")
def workspace(housing: pd.DataFrame) -> Workspace:
    """The real pipeline run once per test run on a 3,000-row sample: DVC, MLflow store and the run's BentoML store."""
    with run_once("pipeline") as root:
        return ran_pipeline(root) or run_pipeline(root, housing)


@pytest.fixture(scope="session")
def bento(workspace: Workspace) -> Path:
    """`bentoml build` of this checkout with the session's champion: the bento's folder in the session's store."""
    with run_once("bento") as folder:
        if not (folder / "tag").is_file():
            result = subprocess.run([str(BIN / "bentoml"), "build", "-o", "tag"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=600, check=False)  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            (folder / "tag").write_text(result.stdout.strip().splitlines()[-1].removeprefix("__tag__:"))
    name, version = (folder / "tag").read_text().split(":")
    return Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version


@pytest.fixture(scope="session")
def champion(workspace: Workspace) -> dict:
    """The registration the pipeline wrote: name, version, run id, MLflow store."""
    return json.loads((workspace.path / "reports" / "registration.json").read_text())


@pytest.fixture(scope="session")
def test_rows(workspace: Workspace) -> pd.DataFrame:
    return pd.read_csv(workspace.path / "data" / "processed" / "test.csv")[list(FEATURE_COLUMNS)]
