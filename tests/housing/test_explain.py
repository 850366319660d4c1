"""Explanations: engineered features fold back onto every raw input, and contributions sum to the price in USD."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMRegressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline

from housing.columns import FEATURE_COLUMNS, OCEAN_PROXIMITY_CATEGORIES
from housing.explain import (
    explain_forest,
    folding_matrix,
    in_usd,
    mean_abs_contribution,
    top_contributions,
)
from housing.features import HousingFeatures
from housing.model_format import fitted_pipeline, target_inverse


def pipeline() -> Pipeline:
    model = LGBMRegressor(n_estimators=60, num_leaves=15, random_state=0, n_jobs=1, verbose=-1)
    return Pipeline([("features", HousingFeatures((3, 10), cv=3)), ("model", model)])


@pytest.fixture(scope="module")
def plain(X_sample: pd.DataFrame, y_sample: pd.Series) -> Pipeline:
    return pipeline().fit(X_sample, y_sample)


@pytest.fixture(scope="module")
def log_target(X_sample: pd.DataFrame, y_sample: pd.Series) -> TransformedTargetRegressor:
    model = TransformedTargetRegressor(regressor=pipeline(), func=np.log, inverse_func=np.exp, check_inverse=False)
    return model.fit(X_sample, y_sample)


def explained(model: Pipeline | TransformedTargetRegressor, houses: pd.DataFrame, num_threads: int = 1):
    """How the service explains: the model's prices, the booster's values, the features' sources."""
    steps = fitted_pipeline(model)
    features = steps.named_steps["features"]
    fold = folding_matrix(features.get_feature_sources_out())
    booster = steps.named_steps["model"].booster_
    return explain_forest(
        booster, features.transform(houses), fold, model.predict(houses), target_inverse(model), num_threads
    )


def test_every_engineered_feature_has_raw_sources(plain: Pipeline) -> None:
    features = plain.named_steps["features"]
    names, sources = list(features.get_feature_names_out()), features.get_feature_sources_out()
    assert len(sources) == len(names)
    assert all(sources)
    assert {name for group in sources for name in group} == set(FEATURE_COLUMNS)
    by_name = dict(zip(names, sources, strict=True))
    for category in OCEAN_PROXIMITY_CATEGORIES:
        assert by_name[f"ocean_proximity_{category}"] == ("ocean_proximity",)
    assert by_name["neighbours10_target"] == by_name["km_to_nearest_neighbour"] == ("longitude", "latitude")
    assert set(by_name["income_vs_neighbours"]) == {"median_income", "longitude", "latitude"}
    assert set(by_name["rooms_per_household"]) == {"total_rooms", "households"}
    matrix = folding_matrix(sources)
    assert matrix.shape == (len(names), len(FEATURE_COLUMNS))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert matrix[names.index("bedrooms_per_room"), FEATURE_COLUMNS.index("total_rooms")] == 0.5


def test_a_source_that_is_not_a_raw_input_is_refused() -> None:
    with pytest.raises(ValueError, match="owner"):
        folding_matrix([("longitude",), ("owner",)])
    with pytest.raises(ValueError, match="feature 0"):
        folding_matrix([()])


@pytest.mark.parametrize("num_threads", [1, 2])
def test_contributions_sum_to_the_price_and_fold_the_feature_values(
    plain: Pipeline, X_sample: pd.DataFrame, num_threads: int
) -> None:
    houses = X_sample.head(200)
    explanation = explained(plain, houses, num_threads)
    assert explanation.contributions_usd.shape == (200, len(FEATURE_COLUMNS))
    np.testing.assert_allclose(explanation.price_usd, plain.predict(houses))
    total = explanation.base_usd + explanation.contributions_usd.sum(axis=1)
    assert np.abs(total - explanation.price_usd).max() < 1.0
    assert np.ptp(explanation.base_usd) == 0  # one base value: the forest's average score
    # LightGBM's own values, each feature's folded onto its sources: ocean_proximity gets exactly the values of
    # its one-hot columns, nothing else.
    features = plain.named_steps["features"]
    values = plain.named_steps["model"].booster_.predict(features.transform(houses), pred_contrib=True)
    np.testing.assert_array_equal(explanation.base_usd, values[:, -1])
    fold = folding_matrix(features.get_feature_sources_out())
    np.testing.assert_allclose(explanation.contributions_usd, values[:, :-1] @ fold, rtol=1e-12, atol=1e-9)
    one_hot = [i for i, name in enumerate(features.get_feature_names_out()) if name.startswith("ocean_proximity_")]
    np.testing.assert_allclose(
        explanation.contributions_usd[:, FEATURE_COLUMNS.index("ocean_proximity")], values[:, one_hot].sum(axis=1)
    )


def test_a_log_target_is_explained_in_usd(log_target: TransformedTargetRegressor, X_sample: pd.DataFrame) -> None:
    houses = X_sample.head(200)
    explanation = explained(log_target, houses)
    prices = log_target.predict(houses)
    np.testing.assert_allclose(explanation.price_usd, prices)
    total = explanation.base_usd + explanation.contributions_usd.sum(axis=1)
    assert np.abs(total - prices).max() < 1.0
    steps = fitted_pipeline(log_target)
    features = steps.named_steps["features"].transform(houses)
    values = steps.named_steps["model"].booster_.predict(features, pred_contrib=True)
    np.testing.assert_allclose(explanation.base_usd, np.exp(values[:, -1]))
    # The proportional split keeps each contribution's sign and the order of their sizes.
    folded = values[:, :-1] @ folding_matrix(steps.named_steps["features"].get_feature_sources_out())
    nonzero = np.abs(folded) > 1e-9
    assert (np.sign(explanation.contributions_usd[nonzero]) == np.sign(folded[nonzero])).all()
    assert (np.argsort(np.abs(explanation.contributions_usd), axis=1) == np.argsort(np.abs(folded), axis=1)).all()


def test_transformed_values_summing_to_zero_take_the_inverse_slope_at_the_base() -> None:
    base = np.log(np.array([200_000.0]))
    explanation = in_usd(base, np.array([[0.1, -0.1]]), np.array([200_000.0]), np.exp)
    assert explanation.base_usd == pytest.approx([200_000.0])
    np.testing.assert_allclose(explanation.contributions_usd, [[20_000.0, -20_000.0]], rtol=1e-6)
    # Without a target transform the values are USD already, and kept as they are.
    kept = in_usd(np.array([1.0]), np.array([[2.0, 3.0]]), np.array([6.0]), None)
    assert (kept.base_usd.tolist(), kept.contributions_usd.tolist()) == ([1.0], [[2.0, 3.0]])


def test_top_contributions_and_importance() -> None:
    contributions = np.array([[5.0, -20.0, 1.0], [-3.0, 4.0, 0.0]])
    top = top_contributions(contributions[0], ("a", "b", "c"), 2)
    assert top == [{"input": "b", "contribution_usd": -20.0}, {"input": "a", "contribution_usd": 5.0}]
    assert mean_abs_contribution(contributions, ("a", "b", "c")) == {"a": 4.0, "b": 12.0, "c": 0.5}
    assert mean_abs_contribution(np.empty((0, 3)), ("a", "b", "c")) == {"a": 0.0, "b": 0.0, "c": 0.0}
