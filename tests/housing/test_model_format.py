from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from housing.model_format import ModelLabels, ModelMetadata, extra_file

META = {
    "mlflow_model": "housing-price-model",
    "mlflow_version": "3",
    "mlflow_run_id": "abc",
    "tracking_uri": "sqlite:///mlflow.db",
    "data_version": "md5",
    "test_metrics": {"rmse": 41300.0},
    "cv_metrics": {"rmse": 41142.0},
    "feature_columns": ["longitude"],
    "reference_profile": "data/model/reference_profile.json",
}


def test_files_logged_beside_the_model_land_in_its_folder() -> None:
    assert extra_file(Path("models/reference_profile.json")) == "data/model/reference_profile.json"


def test_metadata_round_trips_and_names_every_key() -> None:
    assert ModelMetadata.model_validate(META).model_dump() == META
    with pytest.raises(ValidationError, match="reference_profile"):
        ModelMetadata.model_validate({key: value for key, value in META.items() if key != "reference_profile"})


def test_labels_default_the_family() -> None:
    labels = ModelLabels.model_validate({"mlflow_model": "m", "mlflow_version": "1", "mlflow_alias": "champion"})
    assert labels.family == ""
