from __future__ import annotations

from pathlib import Path

from training.evaluate import render_report


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
