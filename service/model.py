"""The served model: the registered champion, loaded from the BentoML model store."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import bentoml
import mlflow.sklearn
import numpy as np
from lightgbm import LGBMModel
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from housing.model_format import MLFLOW_MODEL_FOLDER, ModelLabels, ModelMetadata, fitted_pipeline
from service.api_models import EXAMPLE_HOUSE, House, ModelInfo, columns_of

PARALLEL_ROWS = 1000


@dataclass(frozen=True)
class ServedModel:
    """The fitted pipeline (raw records in, USD out) and what the registry says about it."""

    estimator: BaseEstimator
    # The estimator's predict, or the same computation without its per-call overhead (see fast_predict).
    predictor: Callable[..., Any]
    info: ModelInfo
    # The training data's profile for drift detection (housing.drift_stats), saved with the model.
    reference: dict[str, Any]
    # Predict-time arguments that let the model use every core on a large batch.
    parallel: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, str]:
        """The name and version a prediction response carries."""
        return {"model_name": self.info.model_name, "model_version": self.info.model_version}

    def predict(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Prices in USD, shape (n_houses,), of houses given as columns (see ``columns_of``).

        The columns go through the training pipeline's own feature code. Batches of
        ``PARALLEL_ROWS`` or more use all cores; small requests stay on one, so
        concurrent requests do not fight over threads.
        """
        rows = len(next(iter(columns.values())))
        params = self.parallel if rows >= PARALLEL_ROWS else {}
        return np.asarray(self.predictor(columns, **params), dtype=float)


def load_served_model(bento_model: bentoml.Model) -> ServedModel:
    """Load the MLflow model inside ``bento_model`` and warm it up.

    The sklearn flavour is loaded directly (not through pyfunc's per-call schema
    enforcement), which keeps single predictions fast; the request models already
    validate every field, and a test proves both paths give the same prices.
    """
    estimator = mlflow.sklearn.load_model(bento_model.path_of(MLFLOW_MODEL_FOLDER))
    meta = ModelMetadata.model_validate(bento_model.info.metadata)
    labels = ModelLabels.model_validate(bento_model.info.labels)
    regressor = fitted_pipeline(estimator).named_steps["model"]
    served = ServedModel(
        estimator=estimator,
        predictor=fast_predict(estimator) or estimator.predict,
        reference=reference_of(bento_model),
        parallel={"num_threads": os.cpu_count() or 1} if isinstance(regressor, LGBMModel) else {},
        info=ModelInfo(
            model_name=meta.mlflow_model,
            model_version=meta.mlflow_version,
            run_id=meta.mlflow_run_id,
            bento_tag=str(bento_model.tag),
            family=labels.family,
            data_version=meta.data_version,
            test_metrics=meta.test_metrics,
            cv_metrics=meta.cv_metrics,
            feature_schema=House.model_json_schema(),
        ),
    )
    # The first call builds the neighbour index; do it before traffic arrives.
    served.predict(columns_of([House(**EXAMPLE_HOUSE)]))
    return served


def fast_predict(estimator: BaseEstimator) -> Callable[..., np.ndarray] | None:
    """For a feature pipeline ending in LightGBM: its steps called directly, the booster on one thread.

    LightGBM's scikit-learn wrapper re-derives its parameters (get_params,
    deepcopy, signature inspection) and re-validates the array on every call:
    0.6 ms of a single record's 1.4 ms. The booster computes the same prices from
    the same features; a test holds the two paths equal. None for other models.
    """
    if not isinstance(estimator, Pipeline) or not isinstance(estimator[-1], LGBMModel):
        return None
    transforms = [step for _, step in estimator.steps[:-1]]
    booster = estimator[-1].booster_

    def predict(columns: Mapping[str, Sequence[Any]], num_threads: int = 1) -> np.ndarray:
        features = columns
        for step in transforms:
            features = step.transform(features)
        return np.asarray(booster.predict(features, num_threads=num_threads))

    return predict


def reference_of(bento_model: bentoml.Model) -> dict[str, Any]:
    """The training data's profile saved with the model (housing.drift_stats.reference_profile)."""
    profile = ModelMetadata.model_validate(bento_model.info.metadata).reference_profile
    return cast(dict[str, Any], json.loads((Path(bento_model.path_of(MLFLOW_MODEL_FOLDER)) / profile).read_text()))
