"""The registered model's MLflow pyfunc: prices by default, prices with their intervals on request.

training.register logs the model file (in a folder with its drift profile)
with this module as the pyfunc ``loader_module``, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
load it here, with the same trust list as the service (no pickle). Its
``predict`` keeps MLflow's usual answer (one price per row) unless the caller
passes ``params={"intervals": True}``, optionally with ``"coverage"``; then it
answers a frame of ``price_usd``, ``lower_usd`` and ``upper_usd``, the bounds
the service returns for the same houses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec

from housing.conformal import ConformalRegressor
from housing.model_format import MODEL_FILE, load_model

INTERVALS_PARAM = "intervals"
COVERAGE_PARAM = "coverage"


def params_schema(coverage: float) -> ParamSchema:
    """The inference parameters of the signature; ``coverage`` is the model's nominal one."""
    return ParamSchema([ParamSpec(INTERVALS_PARAM, "boolean", False), ParamSpec(COVERAGE_PARAM, "double", coverage)])


def offers_intervals(signature: ModelSignature | None) -> bool:
    """Whether a logged model prices with intervals: its signature takes the interval parameters (training.register
    declares them only for a model that has intervals; any other MLflow model answers prices alone)."""
    params = signature.params if signature is not None else None
    return params is not None and INTERVALS_PARAM in {param.name for param in params.params}


class IntervalPricer:
    """A loaded model as pyfunc calls it. ``model`` prices raw records (a ConformalRegressor gives bounds too)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray | pd.DataFrame:
        """Prices (USD), shape (n_rows,); with ``intervals``, a frame of price and bounds per row."""
        params = params or {}
        if not params.get(INTERVALS_PARAM):
            return np.asarray(self.model.predict(data), dtype=float)
        if not isinstance(self.model, ConformalRegressor):
            raise ValueError(f"{INTERVALS_PARAM}: this model version was registered without intervals")
        price = self.model.predict(data)
        bounds = self.model.interval(data, price, params.get(COVERAGE_PARAM))
        return pd.DataFrame({"price_usd": price, "lower_usd": bounds[:, 0], "upper_usd": bounds[:, 1]})


def _load_pyfunc(data_path: str) -> IntervalPricer:
    """MLflow's entry point: ``data_path`` is the folder of the model file inside the MLflow model."""
    return IntervalPricer(load_model(Path(data_path) / MODEL_FILE))
