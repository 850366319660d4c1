"""Model families and the full model pipeline built around them.

A *candidate* is a mapping from ``params.yaml``: ``model`` names an entry of
:data:`MODELS`, ``target_transform`` (optional) overrides the training section's,
every other key is a hyperparameter of the model. :func:`build_model`
turns it into one scikit-learn estimator that takes raw records (see
:mod:`housing.features`) and predicts prices in USD.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from lightgbm import LGBMRegressor
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from housing.conformal import ConformalRegressor
from housing.features import HousingFeatures, Records
from housing.model_format import fitted_pipeline
from housing.params import FamilyParams, FeatureParams, Params

# The skops file's description of the objects, beside one .npy file per array.
SKOPS_SCHEMA = "schema.json"
# The earliest time a zip entry can carry.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ModelSpec:
    """How to make one kind of regressor; ``scale`` puts a StandardScaler before it."""

    factory: Callable[..., BaseEstimator]
    scale: bool = False


def _lightgbm(seed: int, **hp: Any) -> LGBMRegressor:
    # One thread per model (folds run in parallel) and deterministic histograms
    # make the same params give the same booster.
    return LGBMRegressor(
        random_state=seed, n_jobs=1, deterministic=True, force_row_wise=True, subsample_freq=1, verbose=-1, **hp
    )


MODELS: dict[str, ModelSpec] = {
    "ols": ModelSpec(lambda seed, **hp: LinearRegression(**hp), scale=True),
    "ridge": ModelSpec(lambda seed, **hp: Ridge(random_state=seed, **hp), scale=True),
    "lasso": ModelSpec(lambda seed, **hp: Lasso(random_state=seed, max_iter=20_000, **hp), scale=True),
    "tree": ModelSpec(lambda seed, **hp: DecisionTreeRegressor(random_state=seed, **hp)),
    "forest": ModelSpec(lambda seed, **hp: RandomForestRegressor(random_state=seed, n_jobs=1, **hp)),
    "lightgbm": ModelSpec(_lightgbm),
}

# Candidate keys that say how to build the model rather than configure it.
NOT_HYPERPARAMETERS = ("model", "target_transform")

TARGET_TRANSFORMS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]] | None] = {
    "none": None,
    "log": (np.log, np.exp),
    "sqrt": (np.sqrt, np.square),
}


def build_model(
    candidate: Mapping[str, Any], features: FeatureParams, target_transform: str, seed: int
) -> BaseEstimator:
    """The full pipeline for one candidate: raw records in, USD out."""
    hp = {key: value for key, value in candidate.items() if key not in NOT_HYPERPARAMETERS}
    target_transform = candidate.get("target_transform", target_transform)
    spec = MODELS[candidate["model"]]
    steps: list[tuple[str, Any]] = [("features", housing_features(features, seed))]
    if spec.scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", spec.factory(seed=seed, **hp)))
    pipeline = Pipeline(steps)
    transform = TARGET_TRANSFORMS[target_transform]
    if transform is None:
        return pipeline
    func, inverse_func = transform
    return TransformedTargetRegressor(regressor=pipeline, func=func, inverse_func=inverse_func, check_inverse=False)


def with_intervals(estimator: BaseEstimator, X: Records, y: Any, oof_pred: Any, params: Params) -> ConformalRegressor:
    """The fitted ``estimator`` with conformal intervals (``intervals`` in params.yaml) calibrated on houses ``X``,
    their prices ``y`` and out-of-fold prices ``oof_pred`` (USD, shape (n_samples,)), per income band of
    ``prepare.income_bands``: the bands the reports judge coverage by."""
    intervals, train = params.intervals, params.train
    wrapper = ConformalRegressor(
        estimator,
        intervals.coverage,
        intervals.scale_model,
        train.cv_folds,
        train.seed,
        income_bands=params.prepare.income_bands,
        min_band_size=intervals.min_band_size,
    )
    return wrapper.fit(X, y, oof_pred)


def housing_features(features: FeatureParams, seed: int) -> HousingFeatures:
    return HousingFeatures(tuple(features.neighbours), cv=features.neighbour_folds, random_state=seed)


def expand_candidates(family: FamilyParams, seed: int) -> list[dict[str, Any]]:
    """Concrete candidates of a family: the whole grid, or ``n_iter`` seeded samples of it."""
    if family.search == "optuna":
        raise ValueError("an optuna family's candidates are drawn trial by trial (training.tuning)")
    grid = [{key: value if isinstance(value, list) else [value] for key, value in c.items()} for c in family.candidates]
    candidates: Iterable[dict[str, Any]] = ParameterGrid(grid)
    if family.search == "random":
        size = len(ParameterGrid(grid))
        n_iter = min(family.n_iter or size, size)
        candidates = islice(ParameterSampler(grid, n_iter=n_iter, random_state=seed), n_iter)
    return [dict(sorted(c.items())) for c in candidates]


def feature_importance(model: BaseEstimator) -> dict[str, float] | None:
    """Importance of each engineered feature, or None where the model defines none.

    Trees give impurity/split importances; linear models the absolute
    coefficients on standardised features.
    """
    pipeline = fitted_pipeline(model)
    regressor = pipeline.named_steps["model"]
    if hasattr(regressor, "feature_importances_"):
        values = np.asarray(regressor.feature_importances_, dtype=float)
    elif hasattr(regressor, "coef_"):
        values = np.abs(np.asarray(regressor.coef_, dtype=float))
    else:
        return None
    names = pipeline.named_steps["features"].get_feature_names_out()
    return {str(name): float(value) for name, value in zip(names, values, strict=True)}


def save_model(model: BaseEstimator, path: Path) -> None:
    """Write ``model`` to ``path`` as skops, byte for byte the same whenever the model is the same.

    So ``dvc.lock`` records the same hash for the same model, however often it is trained again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(same_bytes_each_run(sio.dumps(model)))


def same_bytes_each_run(skops_file: bytes) -> bytes:
    """The skops file ``skops_file`` with what changes between runs made fixed; it loads to the same objects.

    skops names each object by its memory address (``__id__``; an array's file is ``<__id__>.npy``) and stamps
    the zip entries with the time. The addresses become their order of first appearance in ``schema.json``,
    which follows the model's structure, and the times the zip epoch.
    """
    source = zipfile.ZipFile(io.BytesIO(skops_file))
    schema = json.loads(source.read(SKOPS_SCHEMA))
    renamed: dict[int, int] = {}
    arrays: dict[str, str] = {}  # old file name -> new, in order of first appearance

    def rename(node: Any) -> None:
        if isinstance(node, dict):
            if "__id__" in node:
                node["__id__"] = renamed.setdefault(node["__id__"], len(renamed))
            if isinstance(node.get("file"), str) and node["file"].endswith(".npy"):
                new_name = f"{renamed.setdefault(int(node['file'][:-4]), len(renamed))}.npy"
                node["file"] = arrays.setdefault(node["file"], new_name)
            children: Iterable[Any] = node.values()
        else:
            children = node if isinstance(node, list) else ()
        for child in children:
            rename(child)

    rename(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for old_name, new_name in arrays.items():
            target.writestr(zipfile.ZipInfo(new_name, ZIP_EPOCH), source.read(old_name))
        target.writestr(zipfile.ZipInfo(SKOPS_SCHEMA, ZIP_EPOCH), json.dumps(schema, indent=2))
    return out.getvalue()
