"""Regression metrics in the target's units (USD), and a candidate's scores across folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
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


def interval_metrics(y_true: np.ndarray, bounds: np.ndarray) -> dict[str, float]:
    """Share of prices inside their bounds (shape (n_samples, 2)), and the mean and median width in USD."""
    width = bounds[:, 1] - bounds[:, 0]
    inside = (bounds[:, 0] <= y_true) & (y_true <= bounds[:, 1])
    return {
        "coverage": float(inside.mean()),
        "mean_width": float(width.mean()),
        "median_width": float(np.median(width)),
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


@dataclass
class CandidateScore:
    """One candidate's cross-validated figures and out-of-fold predictions, shape (n_samples,), in USD."""

    params: dict[str, Any]
    metrics: dict[str, float]
    oof_pred: np.ndarray = field(repr=False)


def score_folds(
    params: dict[str, Any], y: pd.Series, splits: list[tuple[np.ndarray, np.ndarray]], outcomes: list
) -> CandidateScore:
    """Fold-averaged metrics (mean and std), mean fit time and out-of-fold predictions of one candidate."""
    oof = np.empty(len(y))
    per_fold = []
    for (_, held_idx), (pred, _) in zip(splits, outcomes, strict=True):
        oof[held_idx] = pred
        per_fold.append(regression_metrics(y.iloc[held_idx].to_numpy(), pred))
    metrics = {}
    for name in per_fold[0]:
        values = [fold[name] for fold in per_fold]
        metrics[name], metrics[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
    metrics["fit_seconds"] = float(np.mean([seconds for _, seconds in outcomes]))
    return CandidateScore(params=params, metrics=metrics, oof_pred=oof)
