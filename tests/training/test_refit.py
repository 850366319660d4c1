"""The refit on every labelled row and the repeated K-fold that measures it, on synthetic houses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.conformal import ConformalRegressor
from housing.model_format import load_model
from housing.params import Params
from housing.slices import band_index
from training import refit, refit_effect
from training.estimators import build_model, save_model, with_intervals
from training.prepare import split

LIGHTGBM = {"model": "lightgbm", "n_estimators": 40, "num_leaves": 7}


@pytest.fixture
def small(params: Params, tmp_path: Path, sample: pd.DataFrame) -> Params:
    """Params with three calibration folds, a 2 x 2 measurement and every path under ``tmp_path``; the synthetic
    sample split into train and test files, the chosen configuration saved as train writes it."""
    train_params = params.train.model_copy(
        update={"cv_folds": 3, "n_jobs": 1, "model_path": tmp_path / "model.skops", "winner_path": tmp_path / "w.json"}
    )
    refit_params = params.refit.model_copy(
        update={"effect_folds": 2, "effect_repeats": 2, "model_path": tmp_path / "served.skops",
                "summary_path": tmp_path / "refit.json", "effect_path": tmp_path / "effect.json"}
    )  # fmt: skip
    paths = {"train_path": tmp_path / "train.csv", "test_path": tmp_path / "test.csv"}
    prepare = params.prepare.model_copy(update=paths)
    small = params.model_copy(update={"train": train_params, "refit": refit_params, "prepare": prepare})
    train, test = split(sample, prepare)
    train.to_csv(prepare.train_path, index=False)
    test.to_csv(prepare.test_path, index=False)
    winner = {"family": "gradient_boosting", "params": LIGHTGBM, "train_rows": len(train)}
    train_params.winner_path.write_text(json.dumps(winner))
    return small


def test_labelled_rows_are_the_training_split_then_the_test_split(small: Params, sample: pd.DataFrame) -> None:
    X, y = refit.labelled_rows(small)
    train, test = split(sample, small.prepare)
    assert list(X.columns) == list(FEATURE_COLUMNS)
    pd.testing.assert_frame_equal(X, pd.concat([train, test], ignore_index=True)[list(FEATURE_COLUMNS)])
    np.testing.assert_array_equal(y, np.r_[train[TARGET_COLUMN], test[TARGET_COLUMN]])


def test_fit_and_calibrate_fits_every_row_and_calibrates_out_of_fold(small: Params, sample: pd.DataFrame) -> None:
    X, y = sample[list(FEATURE_COLUMNS)].iloc[:900], sample[TARGET_COLUMN].iloc[:900]
    model = refit.fit_and_calibrate(LIGHTGBM, X, y, small)
    assert isinstance(model, ConformalRegressor)
    # The price model is the configuration fitted on every row, seeded as the search's fits.
    whole = build_model(LIGHTGBM, small.features, "none", small.train.seed).fit(X, y)
    np.testing.assert_array_equal(model.predict(X), whole.predict(X))
    # Its intervals are calibrated on prices of each fold by the same configuration fitted on the other folds.
    oof = np.empty(len(y))
    for train_idx, held_idx in KFold(small.train.cv_folds, shuffle=True, random_state=small.train.seed).split(X):
        fold = build_model(LIGHTGBM, small.features, "none", small.train.seed).fit(X.iloc[train_idx], y.iloc[train_idx])
        oof[held_idx] = fold.predict(X.iloc[held_idx])
    np.testing.assert_array_equal(model.scores_, with_intervals(whole, X, y, oof, small).scores_)
    # One quantile per income band of prepare.income_bands, the reports' bands; a band of too few houses pools.
    assert model.income_bands == small.prepare.income_bands
    sizes = np.bincount(band_index(X["median_income"].to_numpy(), small.prepare.income_bands), minlength=5)
    own = [scores is not None for scores in model.band_scores_]
    assert own == [size >= small.intervals.min_band_size for size in sizes]
    assert True in own  # the sample has bands of both kinds
    assert False in own


def test_fit_and_calibrate_gives_the_same_bytes_with_one_job_or_two(
    small: Params, sample: pd.DataFrame, tmp_path: Path
) -> None:
    X, y = sample[list(FEATURE_COLUMNS)].iloc[:300], sample[TARGET_COLUMN].iloc[:300]
    save_model(refit.fit_and_calibrate(LIGHTGBM, X, y, small, n_jobs=1), tmp_path / "one.skops")
    save_model(refit.fit_and_calibrate(LIGHTGBM, X, y, small, n_jobs=2), tmp_path / "two.skops")
    assert (tmp_path / "one.skops").read_bytes() == (tmp_path / "two.skops").read_bytes()


def test_the_refit_learns_every_labelled_row(small: Params) -> None:
    summary = refit.run(small)
    X, y = refit.labelled_rows(small)
    train_rows = len(pd.read_csv(small.prepare.train_path))
    assert summary == {"served_fit": refit.ALL_LABELLED_ROWS, "rows": len(y), "training_split_rows": train_rows,
                       "family": "gradient_boosting", "params": LIGHTGBM}  # fmt: skip
    assert json.loads(small.refit.summary_path.read_text()) == summary
    expected = build_model(LIGHTGBM, small.features, "none", small.train.seed).fit(X, y)
    np.testing.assert_array_equal(load_model(small.refit.model_path).predict(X), expected.predict(X))


def test_without_the_refit_the_training_split_fit_is_served(small: Params, sample: pd.DataFrame) -> None:
    ols = build_model({"model": "ols"}, small.features, "none", 0)
    save_model(ols.fit(sample[list(FEATURE_COLUMNS)], sample[TARGET_COLUMN]), small.train.model_path)
    off = small.model_copy(update={"refit": small.refit.model_copy(update={"enabled": False})})
    summary = refit.run(off)
    assert (summary["served_fit"], summary["rows"]) == (refit.TRAINING_SPLIT, summary["training_split_rows"])
    assert off.refit.model_path.read_bytes() == off.train.model_path.read_bytes()


def test_the_training_share_is_drawn_as_prepare_draws_the_training_split(small: Params, sample: pd.DataFrame) -> None:
    rows = sample.iloc[100:1100]
    share = refit_effect.training_share(rows, small.prepare)
    train, _ = split(rows, small.prepare)
    assert list(share) == list(train.index)
    assert len(share) == pytest.approx((1 - small.prepare.test_size) * len(rows), abs=1)


def test_the_measurement_holds_every_row_out_once_per_repeat_and_scores_both_fits(small: Params) -> None:
    X, y = refit.labelled_rows(small)
    folds = refit_effect.measure(LIGHTGBM, X, y, small)
    assert len(folds) == 4
    for repeat in (folds[:2], folds[2:]):
        np.testing.assert_array_equal(np.sort(np.concatenate([fold.held for fold in repeat])), np.arange(len(y)))
    first = folds[0]
    rest = np.setdiff1d(np.arange(len(y)), first.held)
    # The decision's stand-in learns a training-split share of the other rows; the refit all of them.
    share = refit_effect.training_share(X.iloc[rest], small.prepare)
    assert (first.share_rows, first.all_rows) == (len(share), len(rest))
    decision_fit = build_model(LIGHTGBM, small.features, "none", small.train.seed).fit(X.loc[share], y.loc[share])
    np.testing.assert_array_equal(first.share_pred, decision_fit.predict(X.iloc[first.held]))
    served = refit.fit_and_calibrate(LIGHTGBM, X.iloc[rest].reset_index(drop=True), y.iloc[rest].reset_index(drop=True),
                                     small)  # fmt: skip
    np.testing.assert_array_equal(first.refit_pred, served.predict(X.iloc[first.held]))
    np.testing.assert_array_equal(first.bounds, served.predict_interval(X.iloc[first.held]))

    effect = refit_effect.summarise(folds, X, y, small)
    truth = y.to_numpy()
    gains = [
        np.sqrt(np.mean((truth[f.held] - f.share_pred) ** 2)) - np.sqrt(np.mean((truth[f.held] - f.refit_pred) ** 2))
        for f in folds
    ]
    assert [fold["gain"] for fold in effect["per_fold"]] == pytest.approx(gains)
    assert effect["rmse"]["gain"] == pytest.approx(np.mean(gains))
    assert effect["rmse"]["gain_std"] == pytest.approx(np.std(gains))
    assert effect["rmse"]["folds_better"] == sum(gain > 0 for gain in gains)
    assert [fold["repeat"] for fold in effect["per_fold"]] == [0, 0, 1, 1]
    inside = np.concatenate([(f.bounds[:, 0] <= truth[f.held]) & (truth[f.held] <= f.bounds[:, 1]) for f in folds])
    assert effect["intervals"]["coverage"] == pytest.approx(inside.mean())
    # Each slice counts its labelled houses once, however many repeats held them out.
    assert sum(figures["houses"] for figures in effect["slices"]["income_band"].values()) == len(y)
