"""The shadow's comparison (housing.shadow_stats): price differences, slices, the paired test and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from housing.shadow_stats import compare, decision_figures, differences, paired_accuracy, verdict

BANDS = [0.0, 1.5, 3.0, 4.5, 6.0]


def test_differences_are_challenger_minus_champion_in_usd_and_percent() -> None:
    champion = np.array([100_000.0, 200_000.0, 400_000.0, 100_000.0])
    challenger = np.array([110_000.0, 190_000.0, 400_000.0, 130_000.0])
    d = differences(champion, challenger)
    assert d["houses"] == 4
    assert d["mean_usd"] == pytest.approx(7_500.0)
    assert d["median_usd"] == pytest.approx(5_000.0)
    assert d["p95_abs_usd"] == pytest.approx(np.percentile([10_000, 10_000, 0, 30_000], 95))
    assert d["mean_pct"] == pytest.approx((10 - 5 + 0 + 30) / 4)
    assert d["median_pct"] == pytest.approx(5.0)
    assert d["p95_abs_pct"] == pytest.approx(np.percentile([10, 5, 0, 30], 95))
    assert differences(np.array([]), np.array([])) == {"houses": 0, "mean_usd": None, "median_usd": None,
                                                       "p95_abs_usd": None, "mean_pct": None, "median_pct": None,
                                                       "p95_abs_pct": None}  # fmt: skip


def test_the_paired_test_sees_a_better_challenger_on_the_same_houses() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(100_000, 400_000, 300)
    champion = actual + rng.normal(0, 40_000, 300)
    challenger = actual + rng.normal(0, 20_000, 300)
    found = paired_accuracy(actual, champion, challenger)
    assert found["houses"] == 300
    assert found["challenger"]["rmse"] < found["champion"]["rmse"]
    assert found["champion"]["rmse"] == pytest.approx(np.sqrt(np.mean((champion - actual) ** 2)))
    assert found["challenger"]["mae"] == pytest.approx(np.mean(np.abs(challenger - actual)))
    assert found["wilcoxon_p"] < 1e-6
    assert found["t_test_p"] < 1e-6
    # The other way round, the one-sided tests see no improvement.
    reverse = paired_accuracy(actual, challenger, champion)
    assert reverse["wilcoxon_p"] > 0.99
    assert reverse["t_test_p"] > 0.99


def test_the_same_prices_prove_nothing() -> None:
    actual, prices = np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.5, 2.0])
    found = paired_accuracy(actual, prices, prices)
    assert (found["wilcoxon_p"], found["t_test_p"], found["mean_squared_error_difference"]) == (1.0, 1.0, 0.0)
    assert paired_accuracy(np.array([]), np.array([]), np.array([]))["champion"] is None


@pytest.mark.parametrize(
    ("n", "challenger_rmse", "p", "promote", "why"),
    [
        (50, 10.0, 0.001, False, "only 50 shadowed houses have feedback; at least 200 are needed"),
        (300, 30.0, 0.001, False, "the challenger is not more accurate"),
        (300, 10.0, 0.2, False, "the difference is not significant"),
        (300, 10.0, 0.001, True, "the challenger beat the champion"),
    ],
)
def test_the_verdict_needs_enough_labels_a_lower_rmse_and_significance(
    n: int, challenger_rmse: float, p: float, promote: bool, why: str
) -> None:
    accuracy = {"houses": n, "champion": {"rmse": 20.0}, "challenger": {"rmse": challenger_rmse}, "wilcoxon_p": p}
    decided, reason = verdict(accuracy, min_labelled=200, p_value=0.05)
    assert decided is promote
    assert reason.startswith(why), reason


def shadowed(houses: int, champion_version: str = "3") -> dict[str, list]:
    """Columns as LogReader.shadow_houses returns them: half the houses labelled, the challenger 10% higher."""
    champion = [100_000.0 + 1_000 * i for i in range(houses)]
    return {
        "champion_version": [champion_version] * houses,
        "champion_price_usd": champion,
        "price_usd": [price * 1.1 for price in champion],
        "lower_usd": [None] * houses,
        "upper_usd": [None] * houses,
        "latency_ms": [4.0] * houses,
        "batch_houses": [4] * houses,
        "ts": [1.0] * houses,
        "champion_lower_usd": [None] * houses,
        "champion_upper_usd": [None] * houses,
        "ocean_proximity": ["INLAND" if i % 2 else "NEAR BAY" for i in range(houses)],
        "median_income": [1.0 if i < houses // 2 else 5.0 for i in range(houses)],
        "actual_price_usd": [price * 1.05 if i % 2 == 0 else None for i, price in enumerate(champion)],
    }


def test_compare_reports_overall_per_slice_latency_and_labelled_houses() -> None:
    houses = shadowed(8)
    other = shadowed(4, champion_version="2")  # priced beside an earlier champion: left out
    columns = {name: houses[name] + other[name] for name in houses}
    found = compare(columns, "3", BANDS)
    assert found["houses_compared"] == 8
    assert found["price_difference"]["mean_pct"] == pytest.approx(10.0)
    assert set(found["slices"]) == {"ocean_proximity", "income_band"}
    assert {value: d["houses"] for value, d in found["slices"]["ocean_proximity"].items()} == {
        "NEAR BAY": 4,
        "INLAND": 4,
    }
    assert {value: d["houses"] for value, d in found["slices"]["income_band"].items()} == {"0-1.5": 4, "4.5-6": 4}
    assert found["challenger_latency"] == {"call_p50_ms": 4.0, "call_p95_ms": 4.0, "per_house_ms": 1.0}
    labelled = found["labelled"]
    assert labelled["houses"] == 4
    # The actual price is 5% over the champion's and 5% under the challenger's: the same error each way.
    assert labelled["champion"]["mae"] == pytest.approx(labelled["challenger"]["mae"], rel=0.1)
    before, after = decision_figures(found, shadowed=12)
    assert set(before) == {"shadow_rmse", "shadow_mae"}
    assert after["shadow_houses"] == 12.0
    assert after["shadow_labelled"] == 4.0
    assert after["shadow_mean_difference_pct"] == pytest.approx(10.0)


def test_compare_without_houses_or_bands() -> None:
    empty = compare({name: [] for name in shadowed(1)}, "3", BANDS)
    assert empty["houses_compared"] == 0
    assert empty["price_difference"]["mean_usd"] is None
    assert empty["labelled"]["houses"] == 0
    assert set(compare(shadowed(4), "3", None)["slices"]) == {"ocean_proximity"}
