"""The conformal intervals: coverage on houses the calibration never saw, widths that follow the noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from lightgbm import LGBMRegressor
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline

from housing.conformal import ConformalRegressor
from housing.features import FeatureEngineer
from housing.model_format import fitted_pipeline, load_model, price_model, target_inverse
from tests.synthetic import synthetic_housing

SCALE = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 30}


def noisy_prices(X: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Prices whose noise is 5,000 USD for incomes below 4 and 60,000 USD above: (prices, noise sd)."""
    sd = np.where(X["median_income"] < 4.0, 5_000.0, 60_000.0)
    signal = 40_000.0 * X["median_income"].to_numpy() + 100_000.0
    return signal + np.random.default_rng(seed).normal(0.0, sd), sd


@pytest.fixture(scope="module")
def houses() -> dict[str, pd.DataFrame]:
    frame = synthetic_housing(6000, seed=3)
    X = frame.drop(columns=["median_house_value"])
    return {"calibration": X.iloc[:3000].reset_index(drop=True), "fresh": X.iloc[3000:].reset_index(drop=True)}


@pytest.fixture(scope="module")
def fitted(houses: dict[str, pd.DataFrame]) -> ConformalRegressor:
    X = houses["calibration"]
    y, _ = noisy_prices(X, seed=0)
    price = make_pipeline(FeatureEngineer(), LGBMRegressor(n_estimators=80, verbose=-1, random_state=0))
    oof = cross_val_predict(price, X, y, cv=5)
    return ConformalRegressor(price.fit(X, y), coverage=0.9, scale_params=SCALE).fit(X, y, oof)


def test_intervals_cover_the_nominal_share_of_fresh_houses(
    fitted: ConformalRegressor, houses: dict[str, pd.DataFrame]
) -> None:
    X = houses["fresh"]
    y, _ = noisy_prices(X, seed=1)
    for coverage in (0.8, 0.9, 0.95):
        lower, upper = fitted.predict_interval(X, coverage).T
        assert abs(np.mean((lower <= y) & (y <= upper)) - coverage) < 0.03, coverage


def test_widths_follow_the_noise(fitted: ConformalRegressor, houses: dict[str, pd.DataFrame]) -> None:
    X = houses["fresh"]
    y, sd = noisy_prices(X, seed=2)
    lower, upper = fitted.predict_interval(X).T
    width, noisy = upper - lower, sd > 10_000
    assert np.median(width[noisy]) > 4 * np.median(width[~noisy])
    # Each group is covered near nominal, not the quiet group over-covered to make up for the noisy one.
    for group in (noisy, ~noisy):
        assert abs(np.mean((lower[group] <= y[group]) & (y[group] <= upper[group])) - 0.9) < 0.05


def test_prices_are_the_price_model_s_and_bounds_surround_them(
    fitted: ConformalRegressor, houses: dict[str, pd.DataFrame]
) -> None:
    X = houses["fresh"].head(50)
    price = fitted.predict(X)
    np.testing.assert_array_equal(price, fitted.estimator.predict(X))
    lower, upper = fitted.interval(X, price).T
    assert (lower >= 0).all()
    assert (lower <= price).all()
    assert (price <= upper).all()
    assert (upper - lower > 0).all()


def test_quantile_is_the_finite_sample_rank() -> None:
    model = ConformalRegressor(None)
    model.scores_ = np.arange(1.0, 10.0)  # 9 scores
    assert model.quantile(0.5) == 5.0  # ceil(10 * 0.5) = 5th smallest
    assert model.quantile(0.8) == 8.0
    assert math.isinf(model.quantile(0.95))  # ceil(10 * 0.95) = 10 > 9 scores: no finite promise
    with pytest.raises(ValueError, match="coverage"):
        model.quantile(1.0)


def test_calibration_refuses_bad_out_of_fold_prices(houses: dict[str, pd.DataFrame]) -> None:
    X = houses["calibration"].head(100)
    y, _ = noisy_prices(X, seed=0)
    with pytest.raises(ValueError, match="oof_pred"):
        ConformalRegressor(None).fit(X, y, y[:-1])
    with pytest.raises(ValueError, match="oof_pred"):
        ConformalRegressor(None).fit(X, y, np.where(np.arange(100) == 5, np.nan, y))
    with pytest.raises(ValueError, match="coverage"):
        ConformalRegressor(None, coverage=1.5).fit(X, y, y)


def test_saved_intervals_load_with_the_trust_list(
    fitted: ConformalRegressor, houses: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    path = tmp_path / "model.skops"
    sio.dump(fitted, path)
    loaded = load_model(path)
    X = houses["fresh"].head(20)
    np.testing.assert_array_equal(loaded.predict_interval(X), fitted.predict_interval(X))


def test_the_wrapper_unwraps_to_its_pipeline(fitted: ConformalRegressor) -> None:
    assert price_model(fitted) is fitted.estimator
    assert fitted_pipeline(fitted) is fitted.estimator
    assert target_inverse(fitted) is None
