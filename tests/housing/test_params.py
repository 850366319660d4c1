from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from devtools.paths import ROOT
from housing.params import load_params
from housing.settings import HousingSettings


def test_params_yaml_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.source.startswith("https://")
    assert set(params.train.families) == {"linear", "decision_tree", "random_forest", "gradient_boosting"}
    assert params.register_.model_name == "housing-price-model"
    assert params.register_.alias == "champion"


def test_environment_overrides_the_data_source(monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params(ROOT / "params.yaml")
    monkeypatch.delenv("HOUSING_DATA_SOURCE", raising=False)
    assert params.data_source(HousingSettings()) == params.data.source
    monkeypatch.setenv("HOUSING_DATA_SOURCE", "/data/copy.csv")
    assert params.data_source(HousingSettings()) == "/data/copy.csv"


def test_params_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["prepare"]["seed"] = 7
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("HOUSING_PARAMS_PATH", str(path))
    assert load_params().prepare.seed == 7


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("prepare", "income_bands", [0.0, 3.0, 1.5], "strictly increasing"),
        ("prepare", "test_size", 1.5, "less than 1"),
        ("train", "target_transform", "cube", "'none', 'log' or 'sqrt'"),
        ("train", "unknown_knob", 1, "Extra inputs"),
    ],
)
def test_invalid_params_are_refused(tmp_path: Path, section: str, key: str, value: object, message: str) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match=message):
        load_params(path)
