"""Refit effect: what serving the all-rows refit gains over the training-split fit, measured without the test split.

The refit has seen the test split, so no test figure can judge it. This stage
repeats the whole procedure inside a repeated K-fold over every labelled row
(``refit.effect_folds`` folds, ``refit.effect_repeats`` times, seeded). In each
fold, the other folds stand for the labelled rows: the chosen configuration is
fitted on a training-split share of them, drawn as prepare draws the training
split (stratified on income band, ``1 - prepare.test_size`` of the rows), as the
decision's fit is; and on all of them, with intervals calibrated by the refit
stage's own procedure (training.refit.fit_and_calibrate), as the served model
is. Both price the held fold. The gain is the first's RMSE minus the second's
(USD; positive when the refit is better), fold by fold, and the refit's
intervals are counted on the held folds, overall and per slice
(housing.slices).

Writes ``reports/refit_effect.json``, which the evaluate stage reports in
reports/model_report.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.model_selection import RepeatedKFold

from housing.params import Params, PrepareParams, load_params
from housing.slices import slice_masks
from training.estimators import build_model
from training.prepare import split
from training.refit import fit_and_calibrate, labelled_rows
from training.scoring import interval_metrics, regression_metrics

log = logging.getLogger(__name__)


@dataclass
class HeldFold:
    """One fold's prices of its held houses by both fits, and the refit's intervals.

    Attributes
    ----------
    held : ndarray of shape (n_held,)
        Positions of the held houses among the labelled rows.
    share_rows, all_rows : int
        Rows the training-split-share fit and the all-rows fit learned from.
    share_pred, refit_pred : ndarray of shape (n_held,)
        Their prices of the held houses, USD.
    bounds : ndarray of shape (n_held, 2)
        The all-rows fit's interval of each held house, USD.
    """

    held: np.ndarray = field(repr=False)
    share_rows: int
    all_rows: int
    share_pred: np.ndarray = field(repr=False)
    refit_pred: np.ndarray = field(repr=False)
    bounds: np.ndarray = field(repr=False)


def training_share(X: pd.DataFrame, prepare: PrepareParams) -> pd.Index:
    """The rows of ``X`` that prepare would put in the training split if they were all the data."""
    train, _ = split(X, prepare)
    return train.index


def price_held_fold(
    candidate: Mapping[str, Any], X: pd.DataFrame, y: pd.Series, rest: np.ndarray, held: np.ndarray, params: Params
) -> HeldFold:
    """Fit ``candidate`` on a training-split share of rows ``rest`` and, calibrated, on all of them; price ``held``.

    ``X`` and ``y`` are every labelled house, indexed by position (training.refit.labelled_rows).
    """
    share = training_share(X.iloc[rest], params.prepare)
    train = params.train
    decision_fit = build_model(candidate, params.features, train.target_transform, train.seed)
    decision_fit.fit(X.loc[share], y.loc[share])
    served = fit_and_calibrate(candidate, X.iloc[rest].reset_index(drop=True), y.iloc[rest].reset_index(drop=True),
                               params)  # fmt: skip
    X_held = X.iloc[held]
    price = served.predict(X_held)
    return HeldFold(held, len(share), len(rest), decision_fit.predict(X_held), price, served.interval(X_held, price))


def measure(candidate: Mapping[str, Any], X: pd.DataFrame, y: pd.Series, params: Params) -> list[HeldFold]:
    """Every fold of the repeated K-fold over the labelled rows ``X``, ``y``, in order (repeat by repeat)."""
    refit = params.refit
    folds = RepeatedKFold(n_splits=refit.effect_folds, n_repeats=refit.effect_repeats, random_state=params.train.seed)
    # A thread per fold, its own fits one after the other; threads for the reason training.refit gives.
    jobs = (delayed(price_held_fold)(candidate, X, y, rest, held, params) for rest, held in folds.split(X))
    return list(Parallel(n_jobs=params.train.n_jobs, prefer="threads")(jobs))


def summarise(folds: list[HeldFold], X: pd.DataFrame, y: pd.Series, params: Params) -> dict[str, Any]:
    """The gain per fold and its spread (USD), and the refit's interval coverage overall and per slice.

    Coverage and widths pool every held house of every repeat; ``houses`` counts each labelled house once.
    """
    truth = y.to_numpy()
    per_fold = []
    for index, fold in enumerate(folds):
        share = regression_metrics(truth[fold.held], fold.share_pred)["rmse"]
        refit = regression_metrics(truth[fold.held], fold.refit_pred)["rmse"]
        per_fold.append(
            {
                "repeat": index // params.refit.effect_folds,
                "held_rows": len(fold.held),
                "share_rows": fold.share_rows,
                "all_rows": fold.all_rows,
                "rmse_share": share,
                "rmse_all_rows": refit,
                "gain": share - refit,
                "coverage": interval_metrics(truth[fold.held], fold.bounds)["coverage"],
            }
        )
    gains = np.array([fold["gain"] for fold in per_fold])
    held = np.concatenate([fold.held for fold in folds])
    bounds = np.concatenate([fold.bounds for fold in folds])
    repeats = params.refit.effect_repeats
    slices = {
        column: {
            value: {"houses": int(mask.sum()) // repeats, **interval_metrics(truth[held][mask], bounds[mask])}
            for value, mask in masks.items()
        }
        for column, masks in slice_masks(X.iloc[held], params.prepare.income_bands).items()
    }
    return {
        "rows": len(y),
        "folds": params.refit.effect_folds,
        "repeats": repeats,
        "rmse": {
            "share": float(np.mean([fold["rmse_share"] for fold in per_fold])),
            "all_rows": float(np.mean([fold["rmse_all_rows"] for fold in per_fold])),
            "gain": float(gains.mean()),
            "gain_std": float(gains.std()),
            "gain_min": float(gains.min()),
            "gain_max": float(gains.max()),
            "relative_gain": float(np.mean([fold["gain"] / fold["rmse_share"] for fold in per_fold])),
            "folds_better": int((gains > 0).sum()),
        },
        "intervals": {
            "nominal": params.intervals.coverage,
            **interval_metrics(truth[held], bounds),
            "coverage_std": float(np.std([fold["coverage"] for fold in per_fold])),
        },
        "slices": slices,
        "per_fold": per_fold,
    }


def run(params: Params) -> dict[str, Any]:
    """Measure the refit of the train stage's winner; return the content of reports/refit_effect.json."""
    winner = json.loads(params.train.winner_path.read_text())
    X, y = labelled_rows(params)
    folds = measure(winner["params"], X, y, params)
    effect = {"family": winner["family"], "params": winner["params"], **summarise(folds, X, y, params)}
    params.refit.effect_path.parent.mkdir(parents=True, exist_ok=True)
    params.refit.effect_path.write_text(json.dumps(effect, indent=2) + "\n")
    rmse, intervals = effect["rmse"], effect["intervals"]
    log.info("refit gain %.0f ± %.0f USD RMSE (%.2f%%), better in %d of %d folds; coverage %.1f%% (nominal %.0f%%)",
             rmse["gain"], rmse["gain_std"], 100 * rmse["relative_gain"], rmse["folds_better"], len(effect["per_fold"]),
             100 * intervals["coverage"], 100 * intervals["nominal"])  # fmt: skip
    return effect


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(load_params())


if __name__ == "__main__":
    main()
