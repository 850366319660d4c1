"""What a registered model is, as both sides read it: its parts, its trusted types, its metadata and labels.

The pipeline writes a model in this shape (training.register, training.champion)
and the service reads it (service.model). A model file may only contain the
types of :data:`TRUSTED_TYPES`; the labels and metadata of the BentoML copy are
the typed classes below, so a key is named once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath, PurePosixPath
from typing import cast

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline

# Where bentoml.mlflow.import_model puts the MLflow model inside a BentoML model.
MLFLOW_MODEL_FOLDER = "mlflow_model"
# Where MLflow puts a model's extra files, such as the drift profile, inside the MLflow model.
EXTRA_FILES_FOLDER = "extra_files"
# The registered version's tag that says where its drift profile is inside the MLflow model.
PROFILE_TAG = "reference_profile"
# The types skops may load from a model file besides scikit-learn's and NumPy's own.
TRUSTED_TYPES: tuple[str, ...] = (
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMRegressor",
    "sklearn.tree._tree.Tree",
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
    """Where a file logged with ``extra_files=[path]`` is inside the MLflow model."""
    return f"{EXTRA_FILES_FOLDER}/{PurePosixPath(path).name}"


def fitted_pipeline(model: BaseEstimator) -> Pipeline:
    """The inner feature+model pipeline of a fitted model, target transform unwrapped."""
    return model.regressor_ if isinstance(model, TransformedTargetRegressor) else model


def target_inverse(model: BaseEstimator) -> Callable[[np.ndarray], np.ndarray] | None:
    """What takes the pipeline's output back to USD: the target transform's inverse, None without one."""
    return (
        cast(Callable[[np.ndarray], np.ndarray], model.inverse_func)
        if isinstance(model, TransformedTargetRegressor)
        else None
    )
