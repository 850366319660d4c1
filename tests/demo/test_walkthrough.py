"""The demo walkthrough (`make demo` after its pipeline) on a copy of the session's project, as a user runs it.

`make demo` is `make pipeline` and then `python -m scripts.demo`: the walkthrough's own first step runs
`dvc repro` again and checks every stage is up to date. The session has run the real pipeline once already
(tests/conftest.py ``workspace``), so the walkthrough runs on a scratch copy of that project and its MLflow
store (HOUSING_PROJECT_DIR) and serves the session's champion, rather than running the pipeline again on the
full data here: the copy's `dvc repro` finds it up to date, as a user's second `make demo` does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.fleet import scratch_project
from tests.workspace import ROOT, Workspace

pytestmark = pytest.mark.integration

STEPS = 12


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> Path:
    return scratch_project(tmp_path_factory.mktemp("demo"), workspace.path)


def run(project: Path, *command: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``command`` as a user runs it on ``project``: the service settings other tests set stay out."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HOUSING_", "MLFLOW_"))}
    env |= {"HOUSING_PROJECT_DIR": str(project), **extra_env}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_the_demo_passes_every_step(project: Path) -> None:
    result = run(project, sys.executable, "-m", "scripts.demo")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    titles = re.findall(r"^(\d+)\. ", result.stdout, flags=re.MULTILINE)
    assert titles == [str(n) for n in range(1, STEPS + 1)]
    assert "✓ every stage is up to date" in result.stdout
    assert "✓ demo passed" in result.stdout
    assert re.search(r"server on port \d+ stopped", result.stdout)


def test_make_demo_is_the_pipeline_then_the_walkthrough() -> None:
    """What `make demo` runs, read from the Makefile the way make does (a dry run)."""
    dry_run = ["make", "-n", "--no-print-directory", "demo"]  # no "Leaving directory" lines under `make test`
    result = subprocess.run(dry_run, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("dvc repro") for line in lines), result.stdout
    assert lines[-1].strip() == "python -m scripts.demo"
