from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import TransformedTargetRegressor

from housing.model_format import TRUSTED_TYPES, load_model
from housing.params import FamilyParams, Params
from tests.workspace import ROOT
from training import PINNED_CPU_FEATURES
from training.estimators import MODELS, build_model, expand_candidates, feature_importance, save_model
from training.tuning import suggest

SMALL = {
    "ols": {},
    "ridge": {"alpha": 1.0},
    "lasso": {"alpha": 10.0},
    "tree": {"max_depth": 6},
    "forest": {"n_estimators": 10, "max_samples": 0.5},
    "lightgbm": {"n_estimators": 50},
}


def test_every_model_has_a_small_config() -> None:
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_predicts_usd_and_round_trips_through_skops(
    name: str, params: Params, X_sample: pd.DataFrame, y_sample: pd.Series, tmp_path: Path
) -> None:
    model = build_model({"model": name, **SMALL[name]}, params.features, "none", seed=0)
    model.fit(X_sample, y_sample)
    pred = model.predict(X_sample.head(200))
    assert pred.shape == (200,)
    assert np.isfinite(pred).all()
    assert 10_000 < np.median(pred) < 600_000
    path = tmp_path / "model.skops"
    save_model(model, path)
    # Every type the file holds is on the explicit trust list, and nothing else loads.
    assert set(sio.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES)
    np.testing.assert_array_equal(load_model(path).predict(X_sample.head(200)), pred)
    importance = feature_importance(model)
    assert importance is not None
    assert len(importance) > 30


def test_log_target_wraps_the_pipeline(params: Params, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    model = build_model({"model": "lightgbm", "n_estimators": 50}, params.features, "log", seed=0)
    assert isinstance(model, TransformedTargetRegressor)
    model.fit(X_sample, y_sample)
    assert 10_000 < np.median(model.predict(X_sample.head(50))) < 600_000
    assert feature_importance(model) is not None


def test_same_seed_same_model(params: Params, X_sample: pd.DataFrame, y_sample: pd.Series) -> None:
    def fit(seed: int) -> np.ndarray:
        candidate = {"model": "lightgbm", "n_estimators": 50, "subsample": 0.7, "colsample_bytree": 0.5}
        return build_model(candidate, params.features, "none", seed).fit(X_sample, y_sample).predict(X_sample)

    np.testing.assert_array_equal(fit(1), fit(1))
    assert not np.array_equal(fit(1), fit(2))


def test_the_same_model_fitted_twice_saves_to_the_same_bytes(
    params: Params, X_sample: pd.DataFrame, y_sample: pd.Series, tmp_path: Path
) -> None:
    """What lets dvc.lock keep the model's hash across runs; skops alone names objects by memory address."""
    candidate = {"model": "lightgbm", "n_estimators": 20, "target_transform": "log"}
    models = [build_model(candidate, params.features, "none", seed=0).fit(X_sample, y_sample) for _ in range(2)]
    assert sio.dumps(models[0]) != sio.dumps(models[1])
    paths = [tmp_path / "first.skops", tmp_path / "second.skops"]
    for model, path in zip(models, paths, strict=True):
        save_model(model, path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = load_model(paths[0])
    np.testing.assert_array_equal(loaded.predict(X_sample), models[0].predict(X_sample))


# Run as a stage runs (a fresh process that imports the training package first): NumPy's dispatch, and a hash of
# the features whose functions SVML computes on AVX-512 CPUs.
STAGE_PROBE = """
import hashlib, json, training, numpy
from numpy._core import _multiarray_umath as simd
from housing.features import FeatureEngineer
from tests.synthetic import synthetic_housing
X = synthetic_housing(3000, seed=0)
features = FeatureEngineer().fit(X).transform(X)
print(json.dumps({"dispatch": list(simd.__cpu_dispatch__),
                  "on": [name for name in simd.__cpu_dispatch__ if simd.__cpu_features__[name]],
                  "features": hashlib.sha256(features.tobytes()).hexdigest()}))
"""


def run_probe(disable: str | None) -> dict:
    env = {name: value for name, value in os.environ.items() if name != "NPY_DISABLE_CPU_FEATURES"}
    if disable is not None:
        env["NPY_DISABLE_CPU_FEATURES"] = disable
    done = subprocess.run([sys.executable, "-c", STAGE_PROBE], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_a_stage_computes_its_features_as_any_x86_64_cpu_does() -> None:
    """What keeps the model file the same bytes on every machine (training/__init__.py): a stage's NumPy runs no
    AVX-512 loop, and its features are those of NumPy's baseline loops, what a CPU without AVX2 computes."""
    stage = run_probe(None)
    if "X86_V4" not in stage["dispatch"]:
        pytest.skip(f"NumPy {np.__version__} names its CPU targets otherwise (the pin names NumPy 2.4's)")
    assert set(PINNED_CPU_FEATURES.split()) == set(stage["dispatch"]) - {"X86_V3"}
    assert set(stage["on"]) <= {"X86_V3"}
    baseline = run_probe(" ".join(stage["dispatch"]))
    assert baseline["on"] == []
    assert stage["features"] == baseline["features"]


def test_grid_expansion() -> None:
    family = FamilyParams(search="grid", candidates=[{"model": "ols"}, {"model": "ridge", "alpha": [0.1, 1.0, 10.0]}])
    assert expand_candidates(family, seed=0) == [
        {"model": "ols"},
        {"alpha": 0.1, "model": "ridge"},
        {"alpha": 1.0, "model": "ridge"},
        {"alpha": 10.0, "model": "ridge"},
    ]


def test_random_search_is_seeded_and_capped() -> None:
    family = FamilyParams(
        search="random",
        n_iter=4,
        candidates=[{"model": "lightgbm", "num_leaves": [15, 31, 63], "learning_rate": [0.01, 0.05], "subsample": 0.8}],
    )
    first = expand_candidates(family, seed=3)
    assert first == expand_candidates(family, seed=3)
    assert len(first) == 4
    assert all(c["subsample"] == 0.8 for c in first)
    assert len({tuple(sorted(c.items())) for c in first}) == 4
    larger = family.model_copy(update={"n_iter": 50})
    assert len(expand_candidates(larger, seed=3)) == 6  # the whole grid, no repeats


def test_params_families_all_build(params: Params) -> None:
    for name, family in params.train.families.items():
        if family.search == "optuna":
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
            candidates = [suggest(study.ask(), family.candidates[0]) for _ in range(3)]
        else:
            candidates = expand_candidates(family, params.train.seed)
        assert candidates, name
        for candidate in candidates:
            build_model(candidate, params.features, params.train.target_transform, params.train.seed)
