"""The conformal intervals: coverage on houses the calibration never saw, in each income band, widths that follow
the noise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from lightgbm import LGBMRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline

from housing.conformal import ConformalRegressor, conformal_quantile
from housing.features import FeatureEngineer
from housing.model_format import fitted_pipeline, load_model, price_model, target_inverse
from tests.synthetic import synthetic_housing

SCALE = {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 30}


def noisy_prices(X: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Prices whose noise is 5,000 USD for incomes below 4 and 60,000 USD above: (prices, noise sd)."""
    sd = np.where(X["median_income"] < 4.0, 5_000.0, 60_000.0)
    signal = 40_000.0 * X["median_income"].to_numpy() + 100_000.0
    return signal + np.random.default_rng(seed).normal(0.0, sd), sd


def shaped_prices(X: pd.DataFrame, seed: int) -> np.ndarray:
    """Prices whose errors have one shape below an income of 4 and another above, of the same mean size.

    Below, uniform errors: over their mean size, 90% are below 1.8. Above, Laplace errors: 90% below 2.3. A scale
    model learns the same mean size in both bands, so one quantile for all houses covers the first band too often
    and the second too seldom.
    """
    rng = np.random.default_rng(seed)
    low = X["median_income"].to_numpy() < 4.0
    noise = np.where(low, rng.uniform(-40_000.0, 40_000.0, len(X)), rng.laplace(0.0, 20_000.0, len(X)))
    return 40_000.0 * X["median_income"].to_numpy() + 100_000.0 + noise


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


@pytest.fixture(scope="module")
def by_band(houses: dict[str, pd.DataFrame]) -> dict[str, ConformalRegressor]:
    """The same price and scale model calibrated on shaped prices, every house together and per income band."""
    X = houses["calibration"]
    y = shaped_prices(X, seed=0)
    # Linear in income, as the prices are: its out-of-fold errors are the noise, not the model's own.
    price = make_pipeline(FeatureEngineer(), LinearRegression())
    oof = cross_val_predict(price, X, y, cv=5)
    price.fit(X, y)
    return {
        name: ConformalRegressor(price, coverage=0.9, scale_params=SCALE, income_bands=bands).fit(X, y, oof)
        for name, bands in (("pooled", None), ("bands", BANDS))
    }


BANDS = [0.0, 4.0]


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


def test_each_income_band_is_covered_at_the_nominal_share(
    by_band: dict[str, ConformalRegressor], houses: dict[str, pd.DataFrame]
) -> None:
    X = houses["fresh"]
    y = shaped_prices(X, seed=1)
    low = X["median_income"].to_numpy() < 4.0
    assert 0.2 < low.mean() < 0.8

    def coverage(model: ConformalRegressor) -> list[float]:
        lower, upper = model.predict_interval(X).T
        covered = (lower <= y) & (y <= upper)
        return [covered[low].mean(), covered[~low].mean(), covered.mean()]

    # One quantile for all: the uniform band over-covered, the Laplace band under-covered.
    pooled_low, pooled_high, _ = coverage(by_band["pooled"])
    assert pooled_low > 0.925
    assert pooled_high < 0.875
    # A quantile per band: each band at its nominal share, and so all houses too.
    for share in coverage(by_band["bands"]):
        assert abs(share - 0.9) < 0.02
    assert [scores is not None for scores in by_band["bands"].band_scores_] == [True, True]


def test_bands_reach_the_service_through_the_spread(
    by_band: dict[str, ConformalRegressor], houses: dict[str, pd.DataFrame]
) -> None:
    """The service prices, runs the scale model and bands each house itself, then asks for the bounds."""
    model, X = by_band["bands"], houses["fresh"].head(200)
    price = model.predict(X)
    spread = model.spread(X, model.scale_.predict(model.scale_inputs(X, price)))
    np.testing.assert_array_equal(spread.group, (X["median_income"].to_numpy() > 4.0).astype(int))
    np.testing.assert_allclose(model.bounds(price, spread, 0.8), model.predict_interval(X, 0.8), rtol=1e-12)
    quantiles = model.quantiles(0.8)
    half_width = (model.predict_interval(X, 0.8)[:, 1] - price) / np.maximum(spread.scale, model.scale_floor_)
    np.testing.assert_allclose(half_width, quantiles[spread.group], rtol=1e-9)


def test_a_band_with_too_few_houses_uses_the_pooled_quantile(houses: dict[str, pd.DataFrame]) -> None:
    X = houses["calibration"]
    y = shaped_prices(X, seed=0)
    incomes = X["median_income"].to_numpy()
    top = float(np.sort(incomes)[-50])  # 49 houses above it
    model = ConformalRegressor(None, scale_params=SCALE, income_bands=[0.0, 4.0, top], min_band_size=100)
    model.fit(X, y, y + np.random.default_rng(0).normal(0.0, 10_000.0, len(y)))
    assert [scores is None for scores in model.band_scores_] == [False, False, True]
    assert sum(len(scores) for scores in model.band_scores_[:2]) == len(y) - 49
    quantiles = model.quantiles()
    assert quantiles[2] == model.quantile()
    assert quantiles[0] != quantiles[1]
    with pytest.raises(ValueError, match="min_band_size"):
        ConformalRegressor(None, income_bands=BANDS, min_band_size=0).fit(X, y, y)


def test_quantile_is_the_finite_sample_rank() -> None:
    model = ConformalRegressor(None)
    model.scores_ = np.arange(1.0, 10.0)  # 9 scores
    assert model.quantile(0.5) == 5.0  # ceil(10 * 0.5) = 5th smallest
    assert model.quantile(0.8) == 8.0
    assert math.isinf(model.quantile(0.95))  # ceil(10 * 0.95) = 10 > 9 scores: no finite promise
    with pytest.raises(ValueError, match="coverage"):
        model.quantile(1.0)
    # Per band, the same rank among the band's own scores; a band of too few scores takes the pooled quantile.
    model.band_scores_ = [np.arange(1.0, 20.0), None]
    np.testing.assert_array_equal(model.quantiles(0.5), [10.0, 5.0])
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest


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


def test_a_file_saved_before_the_bands_serves_its_pooled_intervals(
    by_band: dict[str, ConformalRegressor], houses: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """A version registered before the calibration per band still loads, with the intervals it was fitted with."""
    pooled = by_band["pooled"]
    old = ConformalRegressor(pooled.estimator, pooled.coverage, pooled.scale_params)
    old.__dict__.update(pooled.__dict__)
    for name in ("income_bands", "min_band_size", "band_scores_"):
        delattr(old, name)
    path = tmp_path / "old.skops"
    sio.dump(old, path)
    loaded = load_model(path)
    X = houses["fresh"].head(100)
    np.testing.assert_array_equal(loaded.predict_interval(X), pooled.predict_interval(X))
    assert loaded.income_bands is None


def test_the_wrapper_unwraps_to_its_pipeline(fitted: ConformalRegressor) -> None:
    assert price_model(fitted) is fitted.estimator
    assert fitted_pipeline(fitted) is fitted.estimator
    assert target_inverse(fitted) is None
