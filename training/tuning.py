"""Optuna search of a boosted-tree family, each trial cross-validated with early stopping.

Each trial draws a candidate from the family's search space (Optuna's TPE
sampler, seeded, so a rerun repeats the same trials), cross-validates it and is
logged as one child run of the family's MLflow run. With early stopping,
``n_estimators`` is a ceiling: every fold records its held-out RMSE in USD after
each tree and stops once ``early_stopping_rounds`` trees brought no gain; the
candidate gets the tree count whose mean over the folds is lowest (as
``lightgbm.cv`` picks it), and its out-of-fold predictions are those at that
count.

The fold features (neighbour features out of fold inside each fold) do not
depend on the trial, so they are computed once per target transform and shared
by every trial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm
import mlflow
import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from rich.progress import Progress
from sklearn.model_selection import KFold

from housing.params import FamilyParams, Params
from training.estimators import MODELS, NOT_HYPERPARAMETERS, TARGET_TRANSFORMS, housing_features
from training.scoring import CandidateScore, score_folds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold, as features: the model's inputs, not raw records.

    Attributes
    ----------
    train : ndarray of shape (n_train, n_features)
        The fold's training rows; their neighbour features are out of fold within the fold.
    target : ndarray of shape (n_train,)
        Their prices, in the target transform's scale.
    held : ndarray of shape (n_held, n_features)
        The held-out rows, featurised by the features fitted on ``train``.
    """

    train: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    held: np.ndarray = field(repr=False)


def search(
    family: str, spec: FamilyParams, X: pd.DataFrame, y: pd.Series, params: Params, progress: Progress
) -> list[CandidateScore]:
    """Run the family's ``n_iter`` Optuna trials under the active MLflow run; one score per trial."""
    train = params.train
    splits = list(KFold(train.cv_folds, shuffle=True, random_state=train.seed).split(X))
    folds: dict[str, list[Fold]] = {}
    scores: list[CandidateScore] = []
    task = progress.add_task(family, total=spec.n_iter)

    def objective(trial: optuna.Trial) -> float:
        candidate = suggest(trial, spec.candidates[0])
        transform = candidate.get("target_transform", train.target_transform)
        if transform not in folds:
            folds[transform] = fold_features(X, y, splits, params, transform)
        score = cross_validate(candidate, folds[transform], y, splits, transform, spec.early_stopping_rounds, params)
        with mlflow.start_run(run_name=f"{family}-{trial.number + 1:02d}", nested=True):
            mlflow.log_params(score.params)
            mlflow.log_metrics({f"cv_{name}": value for name, value in score.metrics.items()})
        scores.append(score)
        log.info("%s trial %d: CV RMSE %.0f (%s)", family, trial.number + 1, score.metrics["rmse"], score.params)
        progress.advance(task)
        return score.metrics[train.scoring]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=train.seed)
    study = optuna.create_study(direction="maximize" if train.scoring == "r2" else "minimize", sampler=sampler)
    if spec.first_trial:
        study.enqueue_trial(spec.first_trial)
    study.optimize(objective, n_trials=spec.n_iter)
    return scores


def suggest(trial: optuna.Trial, space: Mapping[str, Any]) -> dict[str, Any]:
    """A candidate drawn from ``space``: a range ``{low, high, log}`` (int if both ends are), a list of
    choices, or a fixed value per key."""
    candidate: dict[str, Any] = {}
    for name, value in sorted(space.items()):
        if isinstance(value, Mapping):
            low, high, log_scale = value["low"], value["high"], bool(value.get("log", False))
            if isinstance(low, int) and isinstance(high, int):
                candidate[name] = trial.suggest_int(name, low, high, log=log_scale)
            else:
                candidate[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
        elif isinstance(value, list):
            candidate[name] = trial.suggest_categorical(name, value)
        else:
            candidate[name] = value
    return candidate


def fold_features(
    X: pd.DataFrame, y: pd.Series, splits: list[tuple[np.ndarray, np.ndarray]], params: Params, transform: str
) -> list[Fold]:
    """Every fold's features, computed in parallel; the target in ``transform``'s scale."""
    forward = _forward(transform)

    def featurise(train_idx: np.ndarray, held_idx: np.ndarray) -> Fold:
        target = forward(y.to_numpy()[train_idx])
        features = housing_features(params.features, params.train.seed)
        train = features.fit_transform(X.iloc[train_idx], target)
        return Fold(train=train, target=target, held=features.transform(X.iloc[held_idx]))

    jobs = (delayed(featurise)(train_idx, held_idx) for train_idx, held_idx in splits)
    return list(Parallel(n_jobs=params.train.n_jobs)(jobs))


def cross_validate(
    candidate: dict[str, Any],
    folds: list[Fold],
    y: pd.Series,
    splits: list[tuple[np.ndarray, np.ndarray]],
    transform: str,
    stopping_rounds: int | None,
    params: Params,
) -> CandidateScore:
    """The candidate's CV score; with ``stopping_rounds``, at the tree count best on average over the folds."""
    inverse = _inverse(transform)
    hp = {key: value for key, value in candidate.items() if key not in NOT_HYPERPARAMETERS}
    seed = params.train.seed
    jobs = (
        delayed(_fit_fold)(hp, fold, y.to_numpy()[held_idx], transform, stopping_rounds, seed)
        for fold, (_, held_idx) in zip(folds, splits, strict=True)
    )
    fitted = list(Parallel(n_jobs=params.train.n_jobs)(jobs))
    trees = int(hp["n_estimators"])
    if stopping_rounds is not None:
        common = min(len(curve) for _, curve, _ in fitted)
        trees = int(np.argmin(np.mean([curve[:common] for _, curve, _ in fitted], axis=0))) + 1
    outcomes = [
        (inverse(model.booster_.predict(fold.held, num_iteration=trees)), seconds)
        for (model, _, seconds), fold in zip(fitted, folds, strict=True)
    ]
    return score_folds({**candidate, "n_estimators": trees}, y, splits, outcomes)


def _fit_fold(
    hp: dict[str, Any],
    fold: Fold,
    held_usd: np.ndarray,
    transform: str,
    stopping_rounds: int | None,
    seed: int,
) -> tuple[Any, list[float], float]:
    """Fit one fold; return the model, its held-out RMSE (USD) after each tree, and the fit time in seconds."""
    inverse = _inverse(transform)

    def rmse_usd(_: np.ndarray, scores: np.ndarray) -> tuple[str, float, bool]:
        # The held rows' true prices in USD, not the transformed target LightGBM passes.
        return "rmse_usd", float(np.sqrt(np.mean((inverse(scores) - held_usd) ** 2))), False

    model = MODELS["lightgbm"].factory(seed=seed, metric="None", **hp)
    curve: dict[str, Any] = {}
    callbacks = [lightgbm.record_evaluation(curve)]
    if stopping_rounds is not None:
        callbacks.append(lightgbm.early_stopping(stopping_rounds, verbose=False))
    start = time.perf_counter()
    held = (fold.held,)
    model.fit(fold.train, fold.target, eval_X=held, eval_y=(_forward(transform)(held_usd),), eval_metric=rmse_usd,
              callbacks=callbacks)  # fmt: skip
    return model, list(curve["valid_0"]["rmse_usd"]), time.perf_counter() - start


def _forward(transform: str) -> Callable[[np.ndarray], np.ndarray]:
    functions = TARGET_TRANSFORMS[transform]
    return (lambda values: values) if functions is None else functions[0]


def _inverse(transform: str) -> Callable[[np.ndarray], np.ndarray]:
    functions = TARGET_TRANSFORMS[transform]
    return (lambda values: values) if functions is None else functions[1]
