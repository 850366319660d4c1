"""Optuna draws candidates from a declared space; early stopping inside CV picks the best tree count."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from rich.progress import Progress
from sklearn.model_selection import KFold

from housing.params import FamilyParams, Params
from training.tuning import cross_validate, fold_features, search, suggest

SPACE = {
    "model": "lightgbm",
    "n_estimators": 400,
    "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
    "num_leaves": {"low": 7, "high": 63},
    "target_transform": ["none", "log"],
}


def test_suggest_draws_ranges_choices_and_fixed_values() -> None:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=5))
    drawn = [suggest(study.ask(), SPACE) for _ in range(20)]
    assert all(d["model"] == "lightgbm" and d["n_estimators"] == 400 for d in drawn)
    assert all(0.01 <= d["learning_rate"] <= 0.3 and isinstance(d["learning_rate"], float) for d in drawn)
    assert all(7 <= d["num_leaves"] <= 63 and isinstance(d["num_leaves"], int) for d in drawn)
    assert {d["target_transform"] for d in drawn} == {"none", "log"}
    again = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=5))
    assert [suggest(again.ask(), SPACE) for _ in range(20)] == drawn  # seeded: a rerun repeats the trials


def test_an_optuna_family_declares_one_space_and_a_budget() -> None:
    with pytest.raises(ValueError, match="exactly one candidate"):
        FamilyParams(search="optuna", candidates=[SPACE])
    with pytest.raises(ValueError, match="exactly one candidate"):
        FamilyParams(search="optuna", n_iter=3, candidates=[SPACE, SPACE])


def test_early_stopping_picks_a_count_no_worse_than_the_ceiling(
    params: Params, X_sample: pd.DataFrame, y_sample: pd.Series
) -> None:
    transform = "log"  # the inverse transform is on the path: curves and predictions in USD
    splits = list(KFold(3, shuffle=True, random_state=0).split(X_sample))
    folds = fold_features(X_sample, y_sample, splits, params, transform)
    # A learning rate high enough that 300 trees overfit: the best count is well below the ceiling.
    candidate = {"model": "lightgbm", "n_estimators": 300, "learning_rate": 0.3, "num_leaves": 31}
    stopped = cross_validate(candidate, folds, y_sample, splits, transform, 30, params)
    full = cross_validate(candidate, folds, y_sample, splits, transform, None, params)
    assert stopped.params["n_estimators"] < 300
    assert full.params["n_estimators"] == 300
    assert stopped.metrics["rmse"] < full.metrics["rmse"]
    assert stopped.oof_pred.shape == y_sample.shape
    # Prices in USD whatever the target transform.
    assert 0.5 < stopped.oof_pred.mean() / y_sample.mean() < 2


def test_search_logs_each_trial_as_a_child_run_starting_from_the_first_trial(
    params: Params, X_sample: pd.DataFrame, y_sample: pd.Series, tmp_path: Path
) -> None:
    space = {"model": "lightgbm", "n_estimators": 60, "learning_rate": {"low": 0.05, "high": 0.3}, "num_leaves": 15}
    spec = FamilyParams(search="optuna", n_iter=3, candidates=[space], early_stopping_rounds=10,
                        first_trial={"learning_rate": 0.123})  # fmt: skip
    small = params.model_copy(update={"train": params.train.model_copy(update={"cv_folds": 3})})
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("tuning")  # not whichever experiment an earlier test left active
    try:
        with mlflow.start_run() as parent, Progress() as progress:
            scores = search("boosting", spec, X_sample, y_sample, small, progress)
        children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(scores) == len(children) == 3
    assert scores[0].params["learning_rate"] == 0.123
    assert sorted(children["params.learning_rate"].astype(float)) == sorted(s.params["learning_rate"] for s in scores)
