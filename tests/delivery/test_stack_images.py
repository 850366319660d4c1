"""The stack's own images beside the service's: the operations image and MLflow with its drivers (hadolint)."""

from __future__ import annotations

import re

import pytest

from tests.delivery.tools import validate
from tests.workspace import ROOT

DOCKERFILES = {
    "operations": ROOT / "deploy" / "operations" / "Dockerfile",
    "mlflow": ROOT / "deploy" / "mlflow" / "Dockerfile",
}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_the_dockerfile_passes_hadolint(name: str) -> None:
    validate("hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILES[name]))


def test_the_operations_image_carries_the_whole_dvc_project() -> None:
    """Every package of the project and the pipeline's files, so `housing retrain` runs the real pipeline."""
    text = DOCKERFILES["operations"].read_text()
    copied = {
        part for line in re.findall(r"^COPY --chown=1034:1034 (.+) \S+$", text, re.MULTILINE) for part in line.split()
    }
    (include,) = re.findall(r"^include = \[(.+)\]$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    packages = {name.strip(' "*') + "/" for name in include.split(",")}  # pyproject's packages.find
    assert packages <= copied
    assert {"params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config", "pyproject.toml", "requirements/"} <= copied
    assert "-c requirements/constraints-py3.12.txt" in text  # the image's Python, pinned as the project is
    assert re.search(r"^FROM \$\{SERVICE_IMAGE\}$", text, re.MULTILINE)  # the service image, its user and model


def test_mlflow_gets_pinned_drivers_and_no_root() -> None:
    text = DOCKERFILES["mlflow"].read_text()
    assert re.search(r"pip install --no-cache-dir psycopg2-binary==[\d.]+ boto3==[\d.]+", text)
    assert re.findall(r"^USER (\S+)$", text, re.MULTILINE)[-1] != "root"
