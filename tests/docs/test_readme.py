"""The README stays true to the code: every setting, knob and endpoint documented, the diagram current."""

from __future__ import annotations

import re

import pytest
import yaml

from housing.settings import HousingSettings, variable
from scripts.render_diagram import SOURCE, readme_block, render
from service.service import API_PATHS, info_app
from tests.workspace import ROOT

README = (ROOT / "README.md").read_text()


def knobs(tree: dict, prefix: str = "") -> list[str]:
    """Dotted names of params.yaml's settings, down to the level a reader sets (families count as one)."""
    names = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("families", "quality_floor", "max_missing_fraction", "scale_model"):
            names += knobs(value, f"{name}.")
        else:
            names.append(name)
    return names


def test_every_environment_variable_is_documented() -> None:
    names = {variable(name) for name in HousingSettings.model_fields}
    assert names == set(re.findall(r"`(HOUSING_[A-Z_]+)`", README)) - {"HOUSING_IMAGE"}


def test_every_params_knob_is_documented() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    missing = [name for name in knobs(params) if f"`{name}`" not in README]
    assert not missing, missing


def test_every_endpoint_is_documented() -> None:
    routes = {route.path for route in info_app.routes if getattr(route, "include_in_schema", False)}
    for path in {*API_PATHS, *routes}:
        assert f"`POST {path}`" in README or f"`GET {path}`" in README or f"`{path}`" in README, path


@pytest.mark.integration
def test_the_diagram_is_the_readmes_and_renders() -> None:
    assert readme_block() == SOURCE.read_text()
    svg = render(SOURCE.read_text(), None)
    for node in ("ingest", "register", "MLflow", "Prometheus", "release.yml"):
        assert node in svg
    assert SOURCE.with_suffix(".png").stat().st_size > 50_000
