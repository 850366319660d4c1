"""`make demo` on the real data, exactly as a user runs it.

The demo runs in a subprocess with the real repository's stores (the MLflow store and the
user's BentoML home, not the suite's throwaway one): it is meant to show the real pipeline.
In a fresh clone `make demo` runs that pipeline first (about two minutes); afterwards it is a no-op.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest

from scripts.demo import ROOT
from tests.conftest import USER_BENTOML_HOME

pytestmark = pytest.mark.integration

STEPS = 12


def run(*command: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``command`` as a user runs it: the service settings other tests set for their own servers stay out."""
    own = {"HOUSING_DATA_SOURCE"}  # where the data is: the user's, as `make` sees it
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "BENTOML_HOME" and (not key.startswith("HOUSING_") or key in own)
    } | extra_env
    if USER_BENTOML_HOME is not None:
        env["BENTOML_HOME"] = USER_BENTOML_HOME
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)


def test_make_demo_passes_every_step() -> None:
    result = run("make", "demo")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    titles = re.findall(r"^(\d+)\. ", result.stdout, flags=re.MULTILINE)
    assert titles == [str(n) for n in range(1, STEPS + 1)]
    assert "✓ demo passed" in result.stdout
    assert re.search(r"server on port \d+ stopped", result.stdout)


def test_a_failing_step_exits_1_and_stops_the_server() -> None:
    # A batch limit below the demo's batch makes the batch step get a 413.
    result = run(sys.executable, "-m", "scripts.demo", HOUSING_MAX_BATCH_SIZE="100")
    assert result.returncode == 1
    assert "demo failed" in result.stderr
    assert "/predict_batch: status 413" in result.stderr
    port = re.search(r"server on port (\d+) stopped", result.stdout)
    assert port, result.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port[1]}/livez", timeout=2)
