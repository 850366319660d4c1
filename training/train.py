"""Train: cross-validated hyperparameter search per model family, tracked in MLflow.

Each family gets a parent run with one child run per candidate (params, CV
RMSE/MAE/R² in USD, fit time). The family's best candidate is refitted on the
whole training split; its out-of-fold residuals, predicted-vs-actual plot and
feature importances are logged on the parent run. The family with the best CV
score wins; its prices get conformal intervals calibrated on its out-of-fold
predictions (housing.conformal), and it is saved to ``models/model.skops``.
That training-split fit is what the evaluate stage scores on the test split and
what the register stage compares with the champion's; the model served is the
same configuration refitted on every labelled row (training.refit).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold

from housing.params import Params, load_params
from training import plots, tuning
from training.estimators import build_model, expand_candidates, feature_importance, save_model, with_intervals
from training.prepare import load_split
from training.scoring import CandidateScore, best_index, score_folds

log = logging.getLogger(__name__)


@dataclass
class FamilyResult:
    family: str
    run_id: str
    best_params: dict[str, Any]
    cv_metrics: dict[str, float]
    search_seconds: float
    model: BaseEstimator = field(repr=False)
    # The best candidate's out-of-fold predictions (USD), shape (n_samples,): its calibration data.
    oof_pred: np.ndarray = field(repr=False)
    # Every candidate tried: its params and CV RMSE ± std (USD), in the order tried.
    trials: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "best_params": self.best_params,
            "cv": self.cv_metrics,
            "n_candidates": len(self.trials),
            "search_seconds": round(self.search_seconds, 2),
            "trials": self.trials,
        }


def _fit_predict(
    estimator: BaseEstimator, X: pd.DataFrame, y: pd.Series, train_idx: np.ndarray, held_idx: np.ndarray
) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    estimator.fit(X.iloc[train_idx], y.iloc[train_idx])
    fit_seconds = time.perf_counter() - start
    return estimator.predict(X.iloc[held_idx]), fit_seconds


def search_family(family: str, X: pd.DataFrame, y: pd.Series, params: Params, progress: Progress) -> FamilyResult:
    """Search one family's candidates under a parent MLflow run; refit the best."""
    train, spec = params.train, params.train.families[family]
    start = time.perf_counter()
    with mlflow.start_run(run_name=family) as parent:
        mlflow.set_tags({"family": family, "role": "family_search"})
        mlflow.log_params(
            {
                "family": family,
                "search": spec.search,
                "n_candidates": spec.n_iter if spec.search == "optuna" else len(expand_candidates(spec, train.seed)),
                "early_stopping_rounds": spec.early_stopping_rounds,
                "cv_folds": train.cv_folds,
                "target_transform": train.target_transform,
                "neighbours": ",".join(map(str, params.features.neighbours)),
                "neighbour_folds": params.features.neighbour_folds,
                "seed": train.seed,
            }
        )
        if spec.search == "optuna":
            scores = tuning.search(family, spec, X, y, params, progress)
        else:
            scores = score_candidates(family, expand_candidates(spec, train.seed), X, y, params, progress)
        best = scores[best_index(train.scoring, [s.metrics[train.scoring] for s in scores])]
        model = build_model(best.params, params.features, train.target_transform, train.seed).fit(X, y)
        mlflow.log_params({f"best_{key}": value for key, value in best.params.items()})
        mlflow.log_metrics({f"cv_{name}": value for name, value in best.metrics.items()})
        _log_diagnostics(family, model, y.to_numpy(), best.oof_pred, params.evaluate.figures_dir / "cv")
        return FamilyResult(
            family=family,
            run_id=parent.info.run_id,
            best_params=best.params,
            cv_metrics=best.metrics,
            trials=[{"params": s.params, "rmse": s.metrics["rmse"], "rmse_std": s.metrics["rmse_std"]} for s in scores],
            search_seconds=time.perf_counter() - start,
            model=model,
            oof_pred=best.oof_pred,
        )


def score_candidates(
    family: str, candidates: list[dict[str, Any]], X: pd.DataFrame, y: pd.Series, params: Params, progress: Progress
) -> list[CandidateScore]:
    """Cross-validate every candidate, logging each as a child run of the active run."""
    train = params.train
    splits = list(KFold(train.cv_folds, shuffle=True, random_state=train.seed).split(X))
    models = [build_model(c, params.features, train.target_transform, train.seed) for c in candidates]
    # Every (candidate, fold) fit is one job, so both cores stay busy even when the
    # fold count is odd; results come back in order, one candidate at a time.
    outcomes = Parallel(n_jobs=train.n_jobs, return_as="generator")(
        delayed(_fit_predict)(clone(model), X, y, train_idx, held_idx)
        for model in models
        for train_idx, held_idx in splits
    )
    task = progress.add_task(family, total=len(candidates))
    scores = []
    for index, candidate in enumerate(candidates, 1):
        score = score_folds(candidate, y, splits, [next(outcomes) for _ in splits])
        with mlflow.start_run(run_name=f"{family}-{index:02d}", nested=True):
            mlflow.log_params(candidate)
            mlflow.log_metrics({f"cv_{name}": value for name, value in score.metrics.items()})
        scores.append(score)
        rmse, r2 = score.metrics["rmse"], score.metrics["r2"]
        log.info("%s %d/%d: CV RMSE %.0f, R² %.4f (%s)", family, index, len(candidates), rmse, r2, candidate)
        progress.advance(task)
    return scores


def _log_diagnostics(family: str, model: BaseEstimator, y: np.ndarray, oof: np.ndarray, out_dir: Path) -> None:
    """Out-of-fold residual and predicted-vs-actual plots and feature importance, to MLflow and disk."""
    figures = {
        "residuals": plots.residuals(y, oof, f"{family}: out-of-fold residuals"),
        "predicted_vs_actual": plots.predicted_vs_actual(y, oof, f"{family}: out-of-fold predictions"),
    }
    importance = feature_importance(model)
    if importance is not None:
        figures["feature_importance"] = plots.feature_importance(importance, f"{family}: feature importance")
        mlflow.log_dict(importance, "feature_importance.json")
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}.png")
        plots.save(fig, out_dir / f"{family}_{name}.png")


def run(params: Params) -> dict[str, Any]:
    """Search every family, save the winner and return the CV results."""
    X, y = load_split(params.prepare.train_path)
    mlflow.set_experiment(params.register_.experiment)
    columns = [TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns) as progress:
        results = [search_family(family, X, y, params, progress) for family in params.train.families]
    scoring = params.train.scoring
    winner = results[best_index(scoring, [result.cv_metrics[scoring] for result in results])]
    save_model(with_intervals(winner.model, X, y, winner.oof_pred, params), params.train.model_path)
    summary = {
        "scoring": scoring,
        "winner": winner.family,
        "train_rows": len(y),
        "families": {result.family: result.summary() for result in results},
    }
    params.train.results_path.parent.mkdir(parents=True, exist_ok=True)
    params.train.results_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    chosen = {"family": winner.family, "params": winner.best_params, "train_rows": len(y)}
    params.train.winner_path.write_text(json.dumps(chosen, indent=2) + "\n")
    log.info("winner: %s (CV %s %.4f)", winner.family, scoring, winner.cv_metrics[scoring])
    return summary


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(load_params())


if __name__ == "__main__":
    main()
