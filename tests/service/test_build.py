"""`bentoml build` packages the service with the champion and a generated Dockerfile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workspace import BIN, ROOT

pytestmark = pytest.mark.integration


def test_bentoml_build(workspace, champion: dict) -> None:
    result = subprocess.run(
        [str(BIN / "bentoml"), "build", "-o", "tag"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name, version = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:").split(":")
    bento = Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.service:HousePricer"
    assert [m["tag"].split(":")[0] for m in manifest["models"]] == ["housing-price-model"]
    assert "python:3.12" in (bento / "env" / "docker" / "Dockerfile").read_text()
    assert (bento / "src" / "service" / "service.py").is_file()
    assert (bento / "src" / "training" / "features.py").is_file()
    assert not (bento / "src" / "training" / "train.py").exists()  # only what serving needs
    assert "lightgbm==" in (bento / "env" / "python" / "requirements.txt").read_text()
