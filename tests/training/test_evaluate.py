from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.evaluate import render_report, slice_metrics


def metrics(met: bool = True) -> dict:
    cv = {"rmse": 40_000.0, "rmse_std": 500.0, "mae": 26_000.0, "r2": 0.88, "fit_seconds": 3.2}
    return {
        "winner": "gradient_boosting",
        "scoring": "rmse",
        "test": {"rmse": 41_000.0, "mae": 27_000.0, "r2": 0.87},
        "test_rows": 3303,
        "train_rows": 13209,
        "quality_floor": {"min_r2": 0.85, "max_rmse": 45_000.0, "met": met},
        "families": {
            "linear": {"cv": {**cv, "rmse": 46_000.0, "r2": 0.84}, "best_params": {"model": "ols"}},
            "gradient_boosting": {"cv": cv, "best_params": {"model": "lightgbm"}},
        },
        "top_features": {"median_income": 0.3, "neighbours10_target": 0.2},
    }


def test_report_ranks_families_and_explains_the_winner() -> None:
    text = render_report(metrics(), Path("reports/figures"), Path("reports/model_report.md"))
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| **gradient_boosting** | 40,000 ± 500")
    assert table[2].startswith("| linear | 46,000")
    assert "6,000 USD lower RMSE than the runner-up **linear** (13.0%)" in text
    assert "12.0 fold standard deviations" in text
    assert "](figures/test/predicted_vs_actual.png)" in text
    assert "| RMSE (USD) | 41,000 | ≤ 45,000 |" in text
    assert "Quality floor met." in text


def test_report_flags_a_missed_floor() -> None:
    text = render_report(metrics(met=False), Path("reports/figures"), Path("reports/model_report.md"))
    assert "Quality floor **NOT met**." in text


def test_slices_report_error_and_coverage_and_name_the_short_ones() -> None:
    X = pd.DataFrame({"median_income": [1.0] * 4 + [7.0] * 400, "ocean_proximity": ["INLAND"] * 404})
    y = np.full(404, 100_000.0)
    pred = y + 1_000.0
    # Every low-income price is outside its interval; 70% of the high-income ones are inside.
    inside = np.r_[np.zeros(4, bool), np.arange(400) < 280]
    bounds = np.column_stack([np.where(inside, 90_000.0, 120_000.0), np.full(404, 130_000.0)])
    slices = slice_metrics(X, y, pred, bounds, [0.0, 1.5, 3.0, 4.5, 6.0])
    assert slices["income_band"]["0-1.5"] == {"rows": 4, "rmse": 1_000.0, "mae": 1_000.0, "coverage": 0.0,
                                               "mean_width": 10_000.0, "median_width": 10_000.0}  # fmt: skip
    assert slices["income_band"]["6+"]["coverage"] == 0.7
    assert slices["ocean_proximity"]["INLAND"]["rows"] == 404
    text = render_report(
        {**metrics(), "intervals": {"nominal": 0.9, "coverage": 0.69, "mean_width": 30_000.0, "median_width": 40_000.0},
         "slices": slices},
        Path("reports/figures"), Path("reports/model_report.md"),
    )  # fmt: skip
    assert "on the test split 69.0% of sale prices fell inside their interval" in text
    assert "| income_band = 6+ | 400 | 1,000 | 1,000 | 70.0% | 31,000 |" in text
    # Four houses cannot show a shortfall; four hundred can.
    assert "**income_band = 0-1.5**: 0.0% covered, 90.0% below nominal, beyond its sampling margin of ±29%" in text
    assert "**income_band = 6+**: 70.0% covered, 20.0% below nominal, beyond its sampling margin of ±3%" in text
    assert "Not in the test split, so not measured: ocean_proximity = <1H OCEAN, ISLAND, NEAR BAY, NEAR OCEAN." in text


def refit(gain: float, enabled: bool = True) -> dict:
    """metrics.json's ``refit``: the measured effect, with an ISLAND slice of five houses one miss from nominal."""
    slice_figures = {"coverage": 0.9, "mean_width": 80_000.0, "median_width": 70_000.0}
    return {
        "enabled": enabled,
        "rows": 16512,
        "folds": 5,
        "repeats": 3,
        "rmse": {"share": 38_400.0, "all_rows": 38_400.0 - gain, "gain": gain, "gain_std": 120.0,
                 "gain_min": gain - 200, "gain_max": gain + 200, "relative_gain": gain / 38_400.0,
                 "folds_better": 15 if gain > 0 else 2},
        "intervals": {"nominal": 0.9, "coverage": 0.905, "coverage_std": 0.004, "mean_width": 81_000.0,
                      "median_width": 72_000.0},
        "slices": {
            "ocean_proximity": {"INLAND": {"houses": 5000, **slice_figures},
                                "ISLAND": {"houses": 5, **slice_figures, "coverage": 0.8}},
            "income_band": {"6+": {"houses": 1800, **slice_figures, "coverage": 0.95}},
        },
    }  # fmt: skip


def test_report_says_what_the_refit_gains_and_whether_its_intervals_hold() -> None:
    text = render_report({**metrics(), "refit": refit(380.0)}, Path("reports/figures"), Path("reports/model_report.md"))
    assert "The served model is this configuration refitted on all 16,512 labelled rows" in text
    assert "3 repeats of 5-fold cross-validation over the 16,512 labelled rows" in text
    assert "| training-split share of the rows | 38,400 |" in text
    assert "| all the rows (the refit) | 38,020 |" in text
    assert "| gain | 380 ± 120 (0.99%; from 180 to 580) |" in text
    assert "The refit prices held-out houses better: lower RMSE in 15 of 15 folds" in text
    assert "held 90.5% of held-out prices (± 0.4% over the folds)" in text
    assert "Overall coverage is within 2 points of nominal." in text
    # Five houses cannot show a gap; 1,800 can, above nominal as below.
    assert "**ocean_proximity = ISLAND**: 80.0% covered, 10.0% below nominal, within its sampling margin" in text
    assert "**income_band = 6+**: 95.0% covered, 5.0% above nominal, beyond its sampling margin of ±1%" in text
    assert "INLAND**" not in text


def test_report_says_so_when_the_refit_does_not_help() -> None:
    text = render_report(
        {**metrics(), "refit": refit(-150.0, enabled=False)}, Path("reports/figures"), Path("reports/model_report.md")
    )
    assert "The served model is the training-split fit scored above (`refit.enabled` is false)" in text
    assert "The refit does **not** price held-out houses better" in text
    assert "| gain | -150 ± 120 (-0.39%; from -350 to 50) |" in text
