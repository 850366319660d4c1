"""Schemathesis against a real `bentoml serve`: every route, admin and feedback included, never a 5xx."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.server import Server, start_server
from tests.workspace import BIN, Workspace

pytestmark = pytest.mark.integration

# One token for both roles, so that one Authorization header opens the admin and the feedback routes.
TOKEN = "fuzz-token"  # noqa: S105 - a test's own token
# These start the real pipeline or move the champion; their own tests cover their bad inputs (test_admin).
NOT_FUZZED = ("POST /admin/retrain", "POST /admin/retrain/alert", "POST /admin/rollback")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> Iterator[Server]:
    env = {"HOUSING_ADMIN_TOKEN": TOKEN, "HOUSING_FEEDBACK_TOKEN": TOKEN, "HOUSING_PROJECT_DIR": str(workspace.path)}
    running = start_server(tmp_path_factory.mktemp("fuzz"), env)
    yield running
    running.stop()


def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    excluded = [arg for name in NOT_FUZZED for arg in ("--exclude-name", name)]
    result = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{server.url}/docs.json", "--url", server.url,
         "-H", f"Authorization: Bearer {TOKEN}", "--checks", "not_a_server_error",
         "--max-examples", "15", "--seed", "1", "--no-color", *excluded],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,  # its cache stays out of the checkout
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "Selected: 18/21" in report, report[-3000:]  # every operation but the three above
    assert server.process.poll() is None
