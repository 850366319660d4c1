"""TreeSHAP tables: each leaf's values are Shapley's, and a forest's equal LightGBM's pred_contrib."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from math import factorial

import numpy as np
import pytest
from lightgbm import LGBMRegressor

from housing import tree_shap
from housing.tree_shap import ShapTables, leaf_values


def shapley_by_enumeration(z: np.ndarray, ones: np.ndarray, value: float) -> np.ndarray:
    """Shapley values of the game v(S) = value * prod_{S} o_j * prod_{not S} z_j, over every coalition."""
    d = len(z)

    def game(members: set[int]) -> float:
        return value * float(np.prod([ones[j] if j in members else z[j] for j in range(d)]))

    phi = np.zeros(d)
    for i in range(d):
        others = [j for j in range(d) if j != i]
        for size in range(d):
            weight = factorial(size) * factorial(d - size - 1) / factorial(d)
            for coalition in combinations(others, size):
                phi[i] += weight * (game({*coalition, i}) - game(set(coalition)))
    return phi


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_each_pattern_gets_the_shapley_values_of_its_game(d: int) -> None:
    rng = np.random.default_rng(d)
    z = rng.uniform(0.05, 1.0, size=(4, d))
    value = rng.normal(size=4) * 1000
    table = leaf_values(z, value)
    assert table.shape == (4, 2**d, d)
    for leaf in range(4):
        for pattern in range(2**d):
            ones = (pattern >> np.arange(d)) & 1
            np.testing.assert_allclose(
                table[leaf, pattern], shapley_by_enumeration(z[leaf], ones, value[leaf]), rtol=1e-10, atol=1e-9
            )
            # Efficiency: the values share out the leaf's part of the score minus its expected part.
            expected = value[leaf] * (np.prod(ones) - np.prod(z[leaf]))
            assert table[leaf, pattern].sum() == pytest.approx(expected, rel=1e-10, abs=1e-9)


def forest(n_features: int = 6, **params: object) -> tuple[LGBMRegressor, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(600, n_features))
    target = rows[:, 0] * 3 + np.sin(rows[:, 1] * rows[:, 2]) * 5 + rng.normal(size=600)
    model = LGBMRegressor(random_state=0, verbose=-1, **{"n_estimators": 40, "num_leaves": 31, **params})
    return model.fit(rows, target), rows


@pytest.mark.parametrize(
    ("params", "threads"),
    [({}, 2), ({"max_depth": 3, "n_estimators": 5}, 1), ({"num_leaves": 63, "min_child_samples": 2}, 3)],
    ids=str,
)
def test_a_forest_gets_the_values_of_pred_contrib(params: dict[str, object], threads: int) -> None:
    model, rows = forest(**params)
    booster = model.booster_
    tables = ShapTables(booster, threads=threads)
    rng = np.random.default_rng(1)
    houses = rng.normal(size=(70, rows.shape[1]))  # more than one block of rows
    # Rows exactly on split thresholds, where "<=" decides, and a missing value (read as 0.0).
    thresholds = [node["threshold"] for node in _splits(booster.dump_model()["tree_info"][0]["tree_structure"])]
    houses[: len(thresholds), 0] = thresholds[: len(houses)]
    houses[-1, 3] = np.nan
    base, values = tables.contributions(houses)
    expected = booster.predict(houses, pred_contrib=True)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(values, expected[:, :-1], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(base, expected[:, -1], rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(base + values.sum(axis=1), booster.predict(houses), rtol=1e-9)
    assert tables.contributions(houses[:0])[1].shape == (0, rows.shape[1])


def _splits(node: dict) -> list[dict]:
    return [] if "leaf_value" in node else [node, *_splits(node["left_child"]), *_splits(node["right_child"])]


def test_trees_without_a_split_add_to_the_base_only() -> None:
    rows = np.random.default_rng(0).normal(size=(50, 3))
    booster = LGBMRegressor(n_estimators=3, min_child_samples=40, verbose=-1).fit(rows, rows[:, 0] > 5).booster_
    base, values = ShapTables(booster, threads=2).contributions(rows[:4])
    expected = booster.predict(rows[:4], pred_contrib=True)
    np.testing.assert_allclose(np.column_stack([values, base]), expected, atol=1e-12)


def test_forests_the_tables_do_not_model_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model, rows = forest(max_depth=4, n_estimators=3)
    monkeypatch.setattr(tree_shap, "MAX_PATH_FEATURES", 1)
    with pytest.raises(ValueError, match=r"splits on \d features; the tables stop at 1"):
        ShapTables(model.booster_)
    monkeypatch.undo()
    rows[::5, 0] = np.nan
    target = np.nan_to_num(rows[:, 0], nan=-3.0) * 5 + rows[:, 1]
    with_missing = LGBMRegressor(n_estimators=3, verbose=-1).fit(rows, target).booster_
    with pytest.raises(ValueError, match="missing values NaN"):
        ShapTables(with_missing)


def test_explanations_running_at_once_each_get_their_own_values() -> None:
    model, rows = forest(num_leaves=63, min_child_samples=2)
    tables = ShapTables(model.booster_, threads=2)
    houses = np.random.default_rng(2).normal(size=(64, rows.shape[1]))
    expected = tables.contributions(houses)[1]
    # Eight threads at once, each explaining its own house over and over: scratch shared between calls
    # would mix their patterns.
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: tables.contributions(houses[i : i + 1])[1][0], [*range(64)] * 20))
    np.testing.assert_array_equal(np.array(got), np.tile(expected, (20, 1)))


def test_rows_of_another_width_are_refused_before_the_kernel_reads_them() -> None:
    model, rows = forest()
    tables = ShapTables(model.booster_)
    for wrong in (rows[:2, :-1], rows[0], np.zeros((2, rows.shape[1] + 1))):
        with pytest.raises(ValueError, match=rf"expected shape \(n, {rows.shape[1]}\)"):
            tables.contributions(wrong)
