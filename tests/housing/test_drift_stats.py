from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from housing.drift_stats import drift_report, psi, reference_profile
from training.prepare import split

PSI, P = 0.2, 0.001


@pytest.fixture(scope="module")
def halves(housing: pd.DataFrame, params) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split(housing, params.prepare)


@pytest.fixture(scope="module")
def profile(halves) -> dict:
    return reference_profile(halves[0], seed=0)


def test_profile_shape(profile: dict, halves) -> None:
    assert profile["rows"] == len(halves[0])
    income = profile["numeric"]["median_income"]
    assert len(income["edges"]) == 9
    assert sum(income["shares"]) == pytest.approx(1.0)
    assert all(s == pytest.approx(0.1, abs=0.01) for s in income["shares"])
    assert len(income["sample"]) == 2000
    assert sum(profile["categorical"]["ocean_proximity"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("rows", [300, 1000, 3000])
def test_fresh_rows_of_the_same_distribution_do_not_drift(profile: dict, halves, rows: int) -> None:
    fresh = halves[1].sample(rows, random_state=rows)
    report = drift_report(profile, fresh, PSI, P)
    assert report["drift_detected"] is False, report["drifted_features"]
    assert report["rows"] == rows


@pytest.mark.parametrize(
    ("shift", "feature"),
    [
        (lambda d: d.assign(median_income=d["median_income"] * 1.5), "median_income"),
        (lambda d: d.assign(longitude=d["longitude"] + 1.0), "longitude"),
        (lambda d: d.assign(latitude=d["latitude"] - 0.8), "latitude"),
        (lambda d: d.assign(housing_median_age=np.minimum(d["housing_median_age"] + 10, 52)), "housing_median_age"),
    ],
)
def test_shifted_inputs_are_flagged_by_name(profile: dict, halves, shift, feature: str) -> None:
    report = drift_report(profile, shift(halves[1].sample(1000, random_state=1)), PSI, P)
    assert report["drift_detected"] is True
    assert feature in report["drifted_features"]
    assert report["features"][feature]["p_value"] < P


def test_a_category_share_change_is_flagged(profile: dict, halves) -> None:
    test = halves[1]
    inland_heavy = pd.concat(
        [test[test["ocean_proximity"] == "INLAND"].sample(700, random_state=2), test.sample(300, random_state=3)]
    )
    report = drift_report(profile, inland_heavy, PSI, P)
    assert "ocean_proximity" in report["drifted_features"]
    assert report["features"]["ocean_proximity"]["test"] == "psi+chi2"


def test_missing_bedrooms_are_ignored_not_counted(profile: dict, halves) -> None:
    rows = halves[1].sample(500, random_state=4).assign(total_bedrooms=np.nan)
    rows.loc[rows.index[:400], "total_bedrooms"] = halves[1]["total_bedrooms"].dropna().iloc[:400].to_numpy()
    assert "total_bedrooms" not in drift_report(profile, rows, PSI, P)["drifted_features"]


def test_psi_is_zero_for_equal_shares_and_grows_with_difference() -> None:
    same = np.array([0.25, 0.25, 0.5])
    assert psi(same, same) == 0.0
    assert 0 < psi(same, np.array([0.3, 0.2, 0.5])) < psi(same, np.array([0.6, 0.1, 0.3]))
