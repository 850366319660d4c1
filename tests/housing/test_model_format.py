from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
import skops.io
from mlflow.models import Model
from pydantic import ValidationError
from sklearn.linear_model import LinearRegression

from housing.model_format import (
    MLMODEL_FILE,
    MODEL_DATA_FOLDER,
    MODEL_FILE,
    PYFUNC_FLAVOR,
    ModelLabels,
    ModelMetadata,
    extra_file,
    load_mlflow_model,
)

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


def test_a_logged_model_loads_from_its_pyfunc_data_and_an_older_one_from_its_sklearn_flavour(tmp_path: Path) -> None:
    """The MLmodel file is read without MLflow; MLflow writes it, so the two agree on its format."""
    fitted = LinearRegression().fit([[0.0], [1.0]], [0.0, 2.0])
    logged = tmp_path / "pyfunc"
    (logged / MODEL_DATA_FOLDER).mkdir(parents=True)
    skops.io.dump(fitted, logged / MODEL_DATA_FOLDER / MODEL_FILE)
    description = Model()
    mlflow.pyfunc.add_to_model(description, loader_module="housing.pyfunc_flavor", data=MODEL_DATA_FOLDER)
    description.save(logged / MLMODEL_FILE)
    older = tmp_path / "sklearn"
    mlflow.sklearn.save_model(fitted, older)
    assert PYFUNC_FLAVOR == mlflow.pyfunc.FLAVOR_NAME
    for model_dir in (logged, older):
        np.testing.assert_allclose(load_mlflow_model(model_dir).predict([[3.0]]), [6.0])
