"""Evaluate: score the chosen model once on the test split and write the reports.

Writes ``reports/metrics.json`` (every family's CV metrics, the winner's test
metrics, the quality floor), ``reports/model_report.md`` (comparison table, why
the winner won, figures) and test-set figures under ``reports/figures/test``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from housing.params import Params, load_params
from training import plots
from training.estimators import feature_importance, load_model
from training.prepare import load_split
from training.scoring import regression_metrics

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

## Most important features of the winner

| feature | importance |
|---|---|
{features}

Out-of-fold plots of every family are in `{figures_dir}/cv/` and on each family's MLflow run.
"""


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
