"""Shared fixtures: the real dataset (or a seeded sample of it), typed params, and a small trained pipeline.

Every test shares one throwaway BentoML home, set before anything touches the
store (BentoML reads ``BENTOML_HOME`` once per process): tests never see or
change the user's own models.
"""

from __future__ import annotations

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

from devtools.local_stores import PostgresServer
from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.params import Params, load_params
from housing.settings import HousingSettings
from tests.stores.engines import LogDatabase
from tests.synthetic import synthetic_housing
from tests.workspace import BIN, ROOT, Workspace, run_pipeline
from training.ingest import ingest

_BENTOML_HOME = tempfile.mkdtemp(prefix="housing-bentoml-")
# Every server of the session shares one cache of compiled forests: each model compiles once.
_COMPILED_DIR = tempfile.mkdtemp(prefix="housing-compiled-")


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


def pytest_configure(config: pytest.Config) -> None:
    os.environ["BENTOML_HOME"] = _BENTOML_HOME
    os.environ["HOUSING_COMPILED_DIR"] = _COMPILED_DIR


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_BENTOML_HOME, ignore_errors=True)
    shutil.rmtree(_COMPILED_DIR, ignore_errors=True)


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
def workspace(tmp_path_factory: pytest.TempPathFactory, housing: pd.DataFrame) -> Workspace:
    """The real pipeline run once on a 3,000-row sample: DVC, MLflow store and the session's BentoML store."""
    return run_pipeline(tmp_path_factory.mktemp("pipeline"), housing)


@pytest.fixture(scope="session")
def bento(workspace: Workspace) -> Path:
    """`bentoml build` of this checkout with the session's champion: the bento's folder in the session's store."""
    result = subprocess.run(
        [str(BIN / "bentoml"), "build", "-o", "tag"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name, version = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:").split(":")
    return Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version


@pytest.fixture(scope="session")
def champion(workspace: Workspace) -> dict:
    """The registration the pipeline wrote: name, version, run id, MLflow store."""
    return json.loads((workspace.path / "reports" / "registration.json").read_text())


@pytest.fixture(scope="session")
def test_rows(workspace: Workspace) -> pd.DataFrame:
    return pd.read_csv(workspace.path / "data" / "processed" / "test.csv")[list(FEATURE_COLUMNS)]
