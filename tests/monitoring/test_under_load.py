"""`make load`'s run (load_tests/run_load.py and its locustfile), short and headless, against a real service.

It drives the monitoring tests' service (conftest.scraped) rather than starting one: a `bentoml serve` costs more
than the whole run. The other tests of that service check figures that more traffic and feedback only add to.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.service.conftest import FEEDBACK_TOKEN
from tests.service.server import Server
from tests.workspace import BIN, ROOT, Workspace

ENDPOINTS = {"/predict", "/predict_batch", "/feedback", "/predict [invalid]"}


def run_load(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m load_tests.run_load ARGS`, as `make load` runs it, with ``env`` added to the environment."""
    command = [str(BIN / "python"), "-m", "load_tests.run_load", *args]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def load_service(scraped: tuple[Server, str], workspace: Workspace, out: Path, users: int, seconds: int) -> list[str]:
    """run_load.py's arguments for a short run against the monitoring tests' service."""
    server, _ = scraped
    houses = workspace.path / "data" / "processed" / "test.csv"
    return ["--host", server.url, "--houses", str(houses), "--users", str(users), "--spawn-rate", str(users),
            "--run-time", f"{seconds}s", "--out", str(out)]  # fmt: skip


@pytest.mark.timing
def test_a_short_load_run_passes_and_ends_cleanly(
    scraped: tuple[Server, str], workspace: Workspace, tmp_path: Path
) -> None:
    # The failure-ratio threshold as `make load` has it; p95 loose, as other jobs share this machine's two cores.
    args = load_service(scraped, workspace, tmp_path, users=4, seconds=10)
    run = run_load(*args, HOUSING_FEEDBACK_TOKEN=FEEDBACK_TOKEN, LOCUST_MAX_P95_MS="3000")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Traceback" not in output
    assert "failure ratio 0.0000" in run.stdout, run.stdout
    assert "-> ok" in run.stdout, run.stdout

    with (tmp_path / "locust_stats.csv").open() as file:
        rows = {row["Name"]: row for row in csv.DictReader(file)}
    assert set(rows) == ENDPOINTS | {"Aggregated"}
    assert all(int(row["Request Count"]) > 0 and row["Failure Count"] == "0" for row in rows.values()), rows
    for empty in ("locust_failures.csv", "locust_exceptions.csv"):
        with (tmp_path / empty).open() as file:
            assert list(csv.DictReader(file)) == [], empty
    html = (tmp_path / "locust.html").read_text()
    assert all(name in html for name in ENDPOINTS)
    assert scraped[0].process.poll() is None


def test_a_run_past_a_threshold_fails_with_its_reason(
    scraped: tuple[Server, str], workspace: Workspace, tmp_path: Path
) -> None:
    args = load_service(scraped, workspace, tmp_path, users=2, seconds=4)
    run = run_load(*args, HOUSING_FEEDBACK_TOKEN=FEEDBACK_TOKEN, LOCUST_MAX_P95_MS="0")
    assert run.returncode == 1, run.stdout + run.stderr
    assert re.search(r"-> FAILED: p95 \d+ ms > 0 ms$", run.stdout, flags=re.MULTILINE), run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_a_run_against_a_running_service_needs_its_feedback_token(tmp_path: Path) -> None:
    houses = tmp_path / "houses.csv"
    houses.write_text("longitude\n-122.2\n")
    run = run_load("--host", "http://127.0.0.1:9", "--houses", str(houses), "--out", str(tmp_path / "out"),
                   HOUSING_FEEDBACK_TOKEN="")  # fmt: skip
    assert run.returncode == 1
    assert "--host needs HOUSING_FEEDBACK_TOKEN" in run.stderr
