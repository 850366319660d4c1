"""Fixtures for the service: the small champion trained by the session's pipeline run, served in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from housing.settings import settings
from tests.workspace import Workspace

ADMIN_TOKEN = "test-admin-token"  # noqa: S105 - a test's own token
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FEEDBACK_TOKEN = "test-feedback-token"  # noqa: S105 - a test's own token
FEEDBACK = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


# One in-process app per test session: BentoML registers its Prometheus metrics once per process.
@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> dict[str, str]:
    """Environment of one service instance: its own prediction DB and log folder, small limits."""
    root = tmp_path_factory.mktemp("service")
    env = {
        "HOUSING_PREDICTION_DB": str(root / "predictions.db"),
        "HOUSING_LOG_DIR": str(root / "log"),
        "HOUSING_MAX_BATCH_SIZE": "500",
        "HOUSING_MAX_EXPLAIN_HOUSES": "200",
        "HOUSING_MAX_BODY_BYTES": str(1024 * 1024),
        "PROMETHEUS_MULTIPROC_DIR": str(root / "prometheus"),
        "HOUSING_ADMIN_TOKEN": ADMIN_TOKEN,
        "HOUSING_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        # These tests read views right after changing what they show.
        "HOUSING_VIEW_CACHE_S": "0",
        "HOUSING_PROJECT_DIR": str(workspace.path),
    }
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
    return env


@pytest.fixture(scope="session")
def client(service_env: dict[str, str]) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in service_env.items():
            mp.setenv(key, value)
        settings.cache_clear()
        from service.service import HousePricer

        with TestClient(HousePricer.to_asgi()) as test_client:
            yield test_client
    settings.cache_clear()
