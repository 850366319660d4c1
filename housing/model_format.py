"""What a registered model is, as both sides read it: its parts, its trusted types, its metadata and labels.

The pipeline writes a model in this shape (training.register, housing.registry)
and the service and the operator tools read it (service.model, operations.cli). A model file may only contain the
types of :data:`TRUSTED_TYPES`; the labels and metadata of the BentoML copy are
the typed classes below, so a key is named once.

The loaders import skops and scikit-learn when called (about 2 s): `bentoml serve`'s parent process
imports the service only to read its definition, and should not pay for them. They read the MLflow model's
MLmodel file as the YAML it is, without MLflow (half a second of each starting worker's CPU), and import MLflow
only for a version logged in its sklearn flavour.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import bentoml
    import numpy as np
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

# Where bentoml.mlflow.import_model puts the MLflow model inside a BentoML model.
MLFLOW_MODEL_FOLDER = "mlflow_model"
# The pyfunc flavour's data inside the MLflow model (training.register logs a folder of that name): the
# model file and the files logged beside it, such as the drift profile.
MODEL_DATA_FOLDER = "data/model"
MODEL_FILE = "model.skops"
# The MLflow model's description, and the flavour whose data is the model file (mlflow.pyfunc.FLAVOR_NAME).
MLMODEL_FILE = "MLmodel"
PYFUNC_FLAVOR = "python_function"
# The registered version's tag that says where its drift profile is inside the MLflow model.
PROFILE_TAG = "reference_profile"
# The types skops may load from a model file besides scikit-learn's and NumPy's own.
TRUSTED_TYPES: tuple[str, ...] = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMRegressor",
    "sklearn.tree._tree.Tree",
    "housing.conformal.ConformalRegressor",
    "housing.features.FeatureEngineer",
    "housing.features.HousingFeatures",
    "housing.features.NeighbourFeatures",
)


class ModelLabels(BaseModel):
    """The labels of a model in the BentoML store: which registered version it is."""

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    mlflow_model: str
    mlflow_version: str
    mlflow_alias: str
    family: str = ""


class ModelMetadata(BaseModel):
    """The metadata of a model in the BentoML store: its MLflow identity, data version and figures.

    Attributes
    ----------
    reference_profile : str
        Path of the training data's drift profile (housing.drift_stats) inside the MLflow model.
    test_metrics, cv_metrics : dict of str to float
        RMSE, MAE (USD) and R² on the test split, and their cross-validation means.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    mlflow_model: str
    mlflow_version: str
    mlflow_run_id: str
    tracking_uri: str
    data_version: str
    test_metrics: dict[str, float]
    cv_metrics: dict[str, float]
    feature_columns: list[str]
    reference_profile: str


def extra_file(path: str | PurePath) -> str:
    """Where a file logged beside the model file is inside the MLflow model."""
    return f"{MODEL_DATA_FOLDER}/{PurePosixPath(path).name}"


def reference_of(bento_model: bentoml.Model) -> dict[str, Any]:
    """The training data's profile saved with the model (housing.drift_stats.reference_profile)."""
    profile = ModelMetadata.model_validate(bento_model.info.metadata).reference_profile
    return cast(dict[str, Any], json.loads((Path(bento_model.path_of(MLFLOW_MODEL_FOLDER)) / profile).read_text()))


def load_model(path: str | PurePath) -> BaseEstimator:
    """Load a model file (skops), trusting only :data:`TRUSTED_TYPES`.

    Loading refuses any other type, so a tampered or unexpected file cannot run code.
    """
    import skops.io as sio

    return sio.load(path, trusted=list(TRUSTED_TYPES))


def load_mlflow_model(model_dir: str | PurePath) -> BaseEstimator:
    """The fitted model inside an MLflow model folder logged by training.register (its pyfunc flavour's data).

    Versions registered before the intervals were logged in MLflow's sklearn flavour: they load as such,
    so a rollback to one still serves.
    """
    import yaml

    flavor = yaml.safe_load((Path(model_dir) / MLMODEL_FILE).read_text())["flavors"][PYFUNC_FLAVOR]
    if "data" not in flavor:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(str(model_dir))
    return load_model(Path(model_dir) / flavor["data"] / MODEL_FILE)


def price_model(model: BaseEstimator) -> BaseEstimator:
    """The price model of a fitted model, its interval wrapper (housing.conformal) unwrapped."""
    from housing.conformal import ConformalRegressor

    return model.estimator if isinstance(model, ConformalRegressor) else model


def fitted_pipeline(model: BaseEstimator) -> Pipeline:
    """The inner feature+model pipeline of a fitted model, interval wrapper and target transform unwrapped."""
    from sklearn.compose import TransformedTargetRegressor

    model = price_model(model)
    return model.regressor_ if isinstance(model, TransformedTargetRegressor) else model


def target_inverse(model: BaseEstimator) -> Callable[[np.ndarray], np.ndarray] | None:
    """What takes the pipeline's output back to USD: the target transform's inverse, None without one."""
    from sklearn.compose import TransformedTargetRegressor

    model = price_model(model)
    return (
        cast("Callable[[np.ndarray], np.ndarray]", model.inverse_func)
        if isinstance(model, TransformedTargetRegressor)
        else None
    )
