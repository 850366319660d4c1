"""Evaluate: score the chosen model's training-split fit once on the test split and write the reports.

Writes ``reports/metrics.json`` (every family's CV metrics, the winner's test
metrics, the quality floor, the measured effect of serving the all-rows refit
from training.refit_effect), ``reports/model_report.md`` (comparison table, why
the winner won, figures, the refit's effect) and test-set figures under
``reports/figures/test``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from housing.columns import CATEGORICAL_COLUMN, OCEAN_PROXIMITY_CATEGORIES
from housing.conformal import ConformalRegressor
from housing.model_format import load_model
from housing.params import Params, load_params
from housing.slices import slice_masks
from training import plots
from training.estimators import feature_importance
from training.prepare import load_split
from training.scoring import interval_metrics, regression_metrics

log = logging.getLogger(__name__)


def evaluate(params: Params) -> dict[str, Any]:
    """Score the saved model on the test split; return the content of metrics.json."""
    cv_results = json.loads(params.train.results_path.read_text())
    model = load_model(params.train.model_path)
    X_test, y_test = load_split(params.prepare.test_path)
    pred = model.predict(X_test)
    test = regression_metrics(y_test.to_numpy(), pred)
    floor = params.evaluate.quality_floor
    figures_dir = params.evaluate.figures_dir / "test"
    winner = cv_results["winner"]
    figures = {
        "residuals": plots.residuals(y_test.to_numpy(), pred, f"{winner}: test residuals"),
        "predicted_vs_actual": plots.predicted_vs_actual(y_test.to_numpy(), pred, f"{winner}: test predictions"),
        "family_comparison": plots.family_comparison(
            {family: r["cv"]["rmse"] for family, r in cv_results["families"].items()}, "RMSE (USD)"
        ),
    }
    for name, fig in figures.items():
        plots.save(fig, figures_dir / f"{name}.png")
    importance = feature_importance(model) or {}
    bounds = model.interval(X_test, pred) if isinstance(model, ConformalRegressor) else None
    y = y_test.to_numpy()
    return {
        "winner": winner,
        "scoring": cv_results["scoring"],
        "test": test,
        "test_rows": len(y_test),
        "train_rows": cv_results["train_rows"],
        "quality_floor": {
            "min_r2": floor.min_r2,
            "max_rmse": floor.max_rmse,
            "met": test["r2"] >= floor.min_r2 and test["rmse"] <= floor.max_rmse,
        },
        "families": {
            family: {"cv": r["cv"], "best_params": r["best_params"], "run_id": r["run_id"], "trials": r["trials"]}
            for family, r in cv_results["families"].items()
        },
        "top_features": dict(sorted(importance.items(), key=lambda item: -item[1])[:10]),
        "intervals": None
        if bounds is None
        else {"nominal": model.coverage, **interval_metrics(y_test.to_numpy(), bounds)},
        "slices": slice_metrics(X_test, y, pred, bounds, params.prepare.income_bands),
        "refit": {"enabled": params.refit.enabled, **refit_effect(params)},
    }


def refit_effect(params: Params) -> dict[str, Any]:
    """The measured effect of the all-rows refit (reports/refit_effect.json) without its per-fold detail."""
    effect = json.loads(params.refit.effect_path.read_text())
    return {key: effect[key] for key in ("rows", "folds", "repeats", "rmse", "intervals", "slices")}


def slice_metrics(
    X: pd.DataFrame, y: np.ndarray, pred: np.ndarray, bounds: np.ndarray | None, edges: list[float]
) -> dict[str, dict[str, dict[str, float]]]:
    """Rows, RMSE and MAE (USD), and interval coverage and width, per value of each slicing column.

    R² is left out: a slice's prices vary less than the whole split's, so its R² says little.
    """
    return {
        column: {
            value: {
                "rows": int(mask.sum()),
                **{name: figure for name, figure in regression_metrics(y[mask], pred[mask]).items() if name != "r2"},
                **({} if bounds is None else interval_metrics(y[mask], bounds[mask])),
            }
            for value, mask in masks.items()
        }
        for column, masks in slice_masks(X, edges).items()
    }


def render_report(metrics: dict[str, Any], figures_dir: Path, report_path: Path) -> str:
    """The Markdown model report; figure links are relative to ``report_path``."""
    scoring = metrics["scoring"]
    families = metrics["families"]
    ranked = sorted(families, key=lambda f: families[f]["cv"][scoring], reverse=scoring == "r2")
    winner, test = metrics["winner"], metrics["test"]
    rows = [
        f"| {'**' + f + '**' if f == winner else f} | {families[f]['cv']['rmse']:,.0f} ± "
        f"{families[f]['cv']['rmse_std']:,.0f} | {families[f]['cv']['mae']:,.0f} | "
        f"{families[f]['cv']['r2']:.4f} | {families[f]['cv']['fit_seconds']:.2f} | `{families[f]['best_params']}` |"
        for f in ranked
    ]
    why = f"**{winner}** has the best cross-validated {scoring.upper()}"
    if len(ranked) > 1:
        runner_up = ranked[1]
        gap = families[runner_up]["cv"]["rmse"] - families[winner]["cv"]["rmse"]
        why += (
            f", {gap:,.0f} USD lower RMSE than the runner-up **{runner_up}** "
            f"({gap / families[runner_up]['cv']['rmse']:.1%}), a gap of "
            f"{gap / max(families[winner]['cv']['rmse_std'], 1e-9):.1f} fold standard deviations"
        )
    floor = metrics["quality_floor"]
    trials = sorted(families[winner].get("trials", []), key=lambda t: t["rmse"])
    trial_rows = "\n".join(
        f"| {rank} | {t['rmse']:,.0f} ± {t['rmse_std']:,.0f} | `{t['params']}` |" for rank, t in enumerate(trials, 1)
    )
    rel = Path(os.path.relpath(figures_dir, report_path.parent)).as_posix()
    features = "\n".join(f"| {name} | {value:,.4g} |" for name, value in metrics["top_features"].items())
    return f"""# Model report

Families were compared on {metrics["train_rows"]:,} training rows by cross-validation;
the winner was then scored once on {metrics["test_rows"]:,} held-out test rows.

## Cross-validated comparison (USD)

| family | CV RMSE ± std | CV MAE | CV R² | fit time (s) | best params |
|---|---|---|---|---|---|
{chr(10).join(rows)}

![family comparison]({rel}/test/family_comparison.png)

## Why the winner won

{why}.

## The winner's search

{len(trials)} candidates of **{winner}**, best first (CV RMSE in USD; where the family stops early, the
tree count is the one with the lowest mean RMSE over the folds):

| rank | CV RMSE ± std | params |
|---|---|---|
{trial_rows}

## Test set

| metric | value | floor |
|---|---|---|
| RMSE (USD) | {test["rmse"]:,.0f} | ≤ {floor["max_rmse"]:,.0f} |
| MAE (USD) | {test["mae"]:,.0f} | |
| R² | {test["r2"]:.4f} | ≥ {floor["min_r2"]} |

Quality floor {"met" if floor["met"] else "**NOT met**"}.

![test predictions]({rel}/test/predicted_vs_actual.png)
![test residuals]({rel}/test/residuals.png)

{interval_section(metrics)}

{refit_section(metrics)}

## Most important features of the winner

| feature | importance |
|---|---|
{features}

Out-of-fold plots of every family are in `{figures_dir}/cv/` and on each family's MLflow run.
"""


# A slice's coverage is judged against nominal minus this many points; below it, the report says which and why.
COVERAGE_TOLERANCE = 0.05


def interval_section(metrics: dict[str, Any]) -> str:
    """The report's intervals and slices: coverage, widths, error and coverage per slice, and what falls short."""
    intervals, slices = metrics.get("intervals"), metrics.get("slices", {})
    lines = ["## Test set by slice", ""]
    if intervals is not None:
        nominal = intervals["nominal"]
        lines = [
            "## Price intervals",
            "",
            f"Nominal coverage {nominal:.0%}: on the test split {intervals['coverage']:.1%} of sale prices fell "
            f"inside their interval; mean width {intervals['mean_width']:,.0f} USD, "
            f"median {intervals['median_width']:,.0f} USD.",
            "",
            *lines,
        ]
    head = "| slice | houses | RMSE | MAE |" + (" coverage | mean width |" if intervals else "")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    short = []
    for column, values in slices.items():
        for value, m in values.items():
            row = f"| {column} = {value} | {m['rows']:,} | {m['rmse']:,.0f} | {m['mae']:,.0f} |"
            if intervals:
                row += f" {m['coverage']:.1%} | {m['mean_width']:,.0f} |"
                if m["coverage"] < intervals["nominal"] - COVERAGE_TOLERANCE:
                    short.append(coverage_gap(f"{column} = {value}", m, intervals["nominal"]))
            lines.append(row)
    if intervals:
        lines += ["", *(short or [f"No slice is below nominal minus {COVERAGE_TOLERANCE * 100:g} points."])]
    absent = [value for value in OCEAN_PROXIMITY_CATEGORIES if value not in slices.get(CATEGORICAL_COLUMN, {})]
    if absent:
        lines.append(f"Not in the test split, so not measured: {CATEGORICAL_COLUMN} = {', '.join(absent)}.")
    return "\n".join(lines)


# The refit's cross-validated coverage should stay within this many points of nominal, overall and per slice.
REFIT_COVERAGE_TOLERANCE = 0.02


def refit_section(metrics: dict[str, Any]) -> str:
    """The report's section on the served model: whether it is the all-rows refit, what refitting gains on held-out
    houses (with its spread) and whether the refit's intervals hold, overall and per slice."""
    refit = metrics.get("refit")
    if refit is None:
        return ""
    rows, rmse, intervals = refit["rows"], refit["rmse"], refit["intervals"]
    served = (
        f"The served model is this configuration refitted on all {rows:,} labelled rows (training split, test "
        "split and feedback) once it was chosen and checked. Every figure above is of its training-split fit, "
        "which the promotion compares with the champion's; the refit learned the test houses, so they cannot "
        "score it. What refitting gains is measured without them:"
        if refit["enabled"]
        else "The served model is the training-split fit scored above (`refit.enabled` is false). What a refit on "
        f"all {rows:,} labelled rows would gain, measured without the test split:"
    )
    folds = refit["folds"] * refit["repeats"]
    verdict = (
        "The refit prices held-out houses better"
        if rmse["gain"] > 0
        else "The refit does **not** price held-out houses better; `refit.enabled: false` serves the training-split fit"
    )
    nominal = intervals["nominal"]
    lines = [
        "## The served model: the refit on every labelled row",
        "",
        served,
        f"{refit['repeats']} repeats of {refit['folds']}-fold cross-validation over the {rows:,} labelled rows. "
        "In each fold the configuration was fitted on a training-split share of the other folds (drawn as prepare "
        "draws the training split) and on all of them, its intervals calibrated as the refit's are; both priced "
        "the held fold.",
        "",
        "| fit | RMSE on the held folds (USD) |",
        "|---|---|",
        f"| training-split share of the rows | {rmse['share']:,.0f} |",
        f"| all the rows (the refit) | {rmse['all_rows']:,.0f} |",
        f"| gain | {rmse['gain']:,.0f} ± {rmse['gain_std']:,.0f} ({rmse['relative_gain']:.2%}; "
        f"from {rmse['gain_min']:,.0f} to {rmse['gain_max']:,.0f}) |",
        "",
        f"{verdict}: lower RMSE in {rmse['folds_better']} of {folds} folds (gain: mean ± standard deviation over "
        "the folds).",
        "",
        f"The refit's {nominal:.0%} intervals held {intervals['coverage']:.1%} of held-out prices "
        f"(± {intervals['coverage_std']:.1%} over the folds), mean width {intervals['mean_width']:,.0f} USD. "
        "Per slice:",
        "",
        "| slice | houses | coverage | mean width (USD) |",
        "|---|---|---|---|",
    ]
    off = []
    for column, values in refit["slices"].items():
        for value, m in values.items():
            lines.append(f"| {column} = {value} | {m['houses']:,} | {m['coverage']:.1%} | {m['mean_width']:,.0f} |")
            if abs(m["coverage"] - nominal) > REFIT_COVERAGE_TOLERANCE:
                off.append(coverage_gap(f"{column} = {value}", {**m, "rows": m["houses"]}, nominal))
    within = f"within {REFIT_COVERAGE_TOLERANCE * 100:g} points of nominal"
    overall = abs(intervals["coverage"] - nominal) <= REFIT_COVERAGE_TOLERANCE
    lines += ["", f"Overall coverage is {within if overall else f'**not** {within}'}."]
    lines += off or [f"Every slice is {within}."]
    return "\n".join(lines)


def coverage_gap(name: str, figures: dict[str, float], nominal: float) -> str:
    """Why a slice's coverage is off nominal: too few houses to tell (its 95% sampling margin), or a real gap."""
    margin = 1.96 * (nominal * (1 - nominal) / figures["rows"]) ** 0.5
    gap = figures["coverage"] - nominal
    verdict = (
        f"within its sampling margin of ±{margin:.0%} for {figures['rows']:,} houses: too few to tell"
        if abs(gap) <= margin
        else f"beyond its sampling margin of ±{margin:.0%}: the intervals are too {'narrow' if gap < 0 else 'wide'} "
        "there"
    )
    side = "below" if gap < 0 else "above"
    return f"- **{name}**: {figures['coverage']:.1%} covered, {abs(gap):.1%} {side} nominal, {verdict}."


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params()
    metrics = evaluate(params)
    paths = params.evaluate
    paths.metrics_path.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    paths.report_path.write_text(render_report(metrics, paths.figures_dir, paths.report_path))
    log.info("test RMSE %.0f USD, R² %.4f (%s)", metrics["test"]["rmse"], metrics["test"]["r2"], metrics["winner"])


if __name__ == "__main__":
    main()
