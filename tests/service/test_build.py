"""`bentoml build` packages the service with the champion and a generated Dockerfile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def test_bentoml_build(bento: Path, champion: dict) -> None:
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    assert manifest["service"] == "service.service:HousePricer"
    assert [m["tag"].split(":")[0] for m in manifest["models"]] == ["housing-price-model"]
    assert "python:3.12" in (bento / "env" / "docker" / "Dockerfile").read_text()
    assert (bento / "src" / "service" / "service.py").is_file()
    assert (bento / "src" / "housing" / "features.py").is_file()
    assert not (bento / "src" / "training").exists()  # only what serving needs
    assert not (bento / "src" / "operations").exists()
    assert "lightgbm==" in (bento / "env" / "python" / "requirements.txt").read_text()
