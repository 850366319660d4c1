"""Regression metrics in the target's units (USD)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

# Which way each metric improves: selection and comparisons go through this.
GREATER_IS_BETTER: dict[str, bool] = {"rmse": False, "mae": False, "r2": True}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in USD, and R², of predictions of shape (n_samples,)."""
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }


def is_better(metric: str, candidate: float, incumbent: float) -> bool:
    """Whether ``candidate`` beats ``incumbent`` on ``metric``."""
    return candidate > incumbent if GREATER_IS_BETTER[metric] else candidate < incumbent


def best_index(metric: str, values: Sequence[float]) -> int:
    """Index of the best of ``values`` on ``metric`` (the first one on ties)."""
    best = 0
    for index, value in enumerate(values):
        if is_better(metric, value, values[best]):
            best = index
    return best
