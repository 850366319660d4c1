"""Refit: the served model is the chosen configuration fitted again on every labelled row.

The train stage chooses a family and its settings by cross-validation on the
training split, evaluate scores that training-split fit on the test split, and
register compares it with the champion's training-split fit on the same split.
Once the choice is made and checked, keeping the test split from the served
model only costs it a fifth of the labelled houses. This stage fits the
winner's configuration (same params and tree count, same seed and features) on
the training split and the test split together, feedback included, and
calibrates its conformal intervals on out-of-fold prices of that same
configuration over the same rows (:func:`fit_and_calibrate`, the procedure
training.refit_effect repeats to measure what it gains). The training-split fit
stays the decision's evidence; the refit never enters a comparison.

With ``refit.enabled`` false the served model is the training-split fit, byte
for byte. Writes ``models/served.skops`` and ``reports/refit.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold

from housing.conformal import ConformalRegressor
from housing.params import Params, load_params
from training.estimators import build_model, save_model, with_intervals
from training.prepare import load_split

log = logging.getLogger(__name__)

# What the served model was fitted on (the version tag ``served_fit``, reports/refit.json).
ALL_LABELLED_ROWS = "all_labelled_rows"
TRAINING_SPLIT = "training_split"


def labelled_rows(params: Params) -> tuple[pd.DataFrame, pd.Series]:
    """Every labelled house: the training split then the test split, feedback in both.

    Returns the raw records, shape (n_rows, 9), and their prices in USD, shape (n_rows,), indexed 0 to n_rows - 1.
    """
    (X_train, y_train), (X_test, y_test) = load_split(params.prepare.train_path), load_split(params.prepare.test_path)
    return pd.concat([X_train, X_test], ignore_index=True), pd.concat([y_train, y_test], ignore_index=True)


def fit_and_calibrate(
    candidate: Mapping[str, Any], X: pd.DataFrame, y: pd.Series, params: Params, n_jobs: int = 1
) -> ConformalRegressor:
    """``candidate`` fitted on houses ``X`` (prices ``y``, USD), with intervals calibrated on its out-of-fold prices.

    The out-of-fold prices come from ``train.cv_folds`` folds of ``X`` (seeded as the search's), each priced by
    the same configuration fitted on the other folds, in ``n_jobs`` processes.
    """
    train = params.train
    model = build_model(candidate, params.features, train.target_transform, train.seed)
    splits = list(KFold(train.cv_folds, shuffle=True, random_state=train.seed).split(X))
    # Threads: the fits release the GIL (LightGBM's training, SciPy's KD-tree), and worker processes would each
    # import the project and copy the houses first, which took longer than the fits on the tests' data.
    jobs = (delayed(_fit_predict)(clone(model), X, y, *split) for split in splits)
    held = Parallel(n_jobs=n_jobs, prefer="threads")(jobs)
    oof = np.empty(len(y))
    for (_, held_idx), pred in zip(splits, held, strict=True):
        oof[held_idx] = pred
    # Fitted here, not in a worker: a model that came back from another process holds the same values but
    # shares fewer Python objects, which skops records, so its file would not be the same bytes.
    return with_intervals(model.fit(X, y), X, y, oof, params)


def _fit_predict(
    model: BaseEstimator, X: pd.DataFrame, y: pd.Series, train_idx: np.ndarray, held_idx: np.ndarray
) -> np.ndarray:
    return np.asarray(model.fit(X.iloc[train_idx], y.iloc[train_idx]).predict(X.iloc[held_idx]), dtype=float)


def run(params: Params) -> dict[str, Any]:
    """Write the served model and return what it was fitted on (the content of reports/refit.json)."""
    winner = json.loads(params.train.winner_path.read_text())
    refit = params.refit
    refit.model_path.parent.mkdir(parents=True, exist_ok=True)
    if refit.enabled:
        X, y = labelled_rows(params)
        save_model(fit_and_calibrate(winner["params"], X, y, params, params.train.n_jobs), refit.model_path)
        rows = len(y)
    else:
        shutil.copyfile(params.train.model_path, refit.model_path)
        rows = winner["train_rows"]
    summary = {
        "served_fit": ALL_LABELLED_ROWS if refit.enabled else TRAINING_SPLIT,
        "rows": rows,
        "training_split_rows": winner["train_rows"],
        "family": winner["family"],
        "params": winner["params"],
    }
    refit.summary_path.parent.mkdir(parents=True, exist_ok=True)
    refit.summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("served model: %s fitted on %s (%d rows)", winner["family"], summary["served_fit"], rows)
    return summary


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(load_params())


if __name__ == "__main__":
    main()
