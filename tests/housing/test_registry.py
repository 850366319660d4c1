"""The registry (housing.registry): champion/challenger decisions, rollback and history against a real MLflow store
and BentoML store, directly and through a project's registry."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.base import BaseEstimator

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.model_format import PROFILE_TAG
from housing.params import Params, RegisterParams
from housing.registry import (
    NoProjectError,
    NoRegistryError,
    ProjectRegistry,
    champion_version,
    crown,
    history,
    is_served,
    record,
    rollback,
    rollback_target,
    served_model,
)
from tests.conftest import tracking_store
from tests.workspace import Workspace
from training.estimators import build_model, save_model
from training.register import (
    EVIDENCE_NAME,
    EVIDENCE_TAG,
    NoChampionError,
    challenge,
    log_model_file,
    register,
    runtime_requirements,
)
from training.scoring import regression_metrics


@pytest.fixture(scope="module")
def reg(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegisterParams]:
    """A throwaway tracking store and model names of its own (the session's BentoML store is shared)."""
    root = tmp_path_factory.mktemp("mlflow")
    with tracking_store(f"sqlite:///{root / 'mlflow.db'}"):
        mlflow.create_experiment("registry-test", artifact_location=(root / "artifacts").as_uri())
        yield params.register_.model_copy(
            update={
                "model_name": "registry-test-model",
                "bento_model_name": "registry-test-model",
                "experiment": "registry-test",
                "decisions_experiment": "registry-test-decisions",
            }
        )


@pytest.fixture(scope="module")
def split(sample: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, np.ndarray]:

    train, test = sample.iloc[:1500], sample.iloc[1500:]
    return (
        train[list(FEATURE_COLUMNS)],
        train[TARGET_COLUMN],
        test[list(FEATURE_COLUMNS)],
        test[TARGET_COLUMN].to_numpy(),
    )


def log_version(
    reg: RegisterParams,
    model: BaseEstimator,
    rmse: float = 50_000.0,
    corrupt: bool = False,
    evidence: BaseEstimator | None = None,
) -> str:
    """Register ``model``; with ``evidence``, log that as its training-split fit on the same run, as register does."""
    mlflow.set_experiment(reg.experiment)
    with tempfile.TemporaryDirectory() as folder, mlflow.start_run():
        save_model(model, Path(folder) / "model.skops")
        info = log_model_file(Path(folder) / "model.skops", reg.model_name, pip_requirements=runtime_requirements())
        if evidence is not None:
            save_model(evidence, Path(folder) / "evidence.skops")
            evidence_uri = log_model_file(
                Path(folder) / "evidence.skops", None, name=EVIDENCE_NAME, pip_requirements=runtime_requirements()
            ).model_uri
    if corrupt:  # a truncated upload: the serialized model is no longer readable
        (model_file,) = Path(urlparse(mlflow.get_logged_model(info.model_id).artifact_location).path).rglob("*.skops")
        model_file.write_bytes(model_file.read_bytes()[:100])
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.set_model_version_tag(reg.model_name, version, "test_rmse", str(rmse))
    client.set_model_version_tag(reg.model_name, version, "family", "test")
    client.set_model_version_tag(reg.model_name, version, "data_version", "abc")
    client.set_model_version_tag(reg.model_name, version, PROFILE_TAG, "data/model/reference_profile.json")
    if evidence is not None:
        client.set_model_version_tag(reg.model_name, version, EVIDENCE_TAG, evidence_uri)
    return version


def fitted(params: Params, split: tuple, candidate: dict) -> BaseEstimator:
    X, y, _, _ = split
    return build_model(candidate, params.features, "none", seed=0).fit(X, y)


def test_champion_challenger_rollback_and_history(
    reg: RegisterParams, params: Params, split: tuple, tmp_path: Path
) -> None:
    client = MlflowClient()
    _, _, X_test, y_test = split
    weak = log_version(reg, fitted(params, split, {"model": "ols"}))

    first = challenge(client, reg, weak, None, X_test, y_test, "test")
    assert (first.action, first.champion_after, first.reason) == ("promote", weak, "first champion")
    crown(client, reg, first)
    assert str(champion_version(client, reg).version) == weak
    assert is_served(client, reg, weak)
    assert served_model(client, reg, weak).info.labels["mlflow_version"] == weak
    # A BentoML store that lost the model (here: never had this name) gets the champion imported.
    elsewhere = reg.model_copy(update={"bento_model_name": "registry-test-elsewhere"})
    assert not is_served(client, elsewhere, weak)
    assert served_model(client, elsewhere, weak).tag.name == "registry-test-elsewhere"
    assert is_served(client, elsewhere, weak)
    # Another registry's version of the same number (another project's, or this one moved to a server) is not this
    # one: it is imported, not taken for the model the store holds.
    other = elsewhere.model_copy(update={"model_name": "registry-test-other"})
    assert log_version(other, fitted(params, split, {"model": "tree", "max_depth": 3})) == weak
    assert not is_served(client, other, weak)
    assert (
        served_model(client, other, weak).info.metadata["mlflow_run_id"]
        != served_model(client, reg, weak).info.metadata["mlflow_run_id"]
    )
    assert is_served(client, other, weak)
    # Imported through the client's registry, even where the process's own registry is another one.
    with tracking_store(f"sqlite:///{tmp_path / 'another.db'}"):
        moved = reg.model_copy(update={"bento_model_name": "registry-test-moved"})
        assert (
            served_model(client, moved, weak).info.metadata["mlflow_run_id"]
            == client.get_model_version(reg.model_name, weak).run_id
        )

    strong = log_version(reg, fitted(params, split, {"model": "lightgbm", "n_estimators": 100, "num_leaves": 15}))
    better = challenge(client, reg, strong, champion_version(client, reg), X_test, y_test, "drift in median_income")
    assert better.action == "promote", better.reason
    assert better.metrics_after["rmse"] < better.metrics_before["rmse"]
    assert better.reason.startswith("better: RMSE")
    assert f"champion v{weak}'s" in better.reason
    crown(client, reg, better)

    # The weak model again is worse than the new champion: refused, the champion stays.
    worse_version = log_version(reg, fitted(params, split, {"model": "ols"}))
    worse = challenge(client, reg, worse_version, champion_version(client, reg), X_test, y_test, "test")
    assert worse.action == "reject"
    assert worse.reason.startswith("not better")
    assert worse.champion_after == strong
    record(client, reg, worse)
    assert str(champion_version(client, reg).version) == strong
    assert client.get_model_version(reg.model_name, worse_version).tags["decision"] == "reject"
    assert is_served(client, reg, strong)

    assert rollback_target(client, reg) == weak
    rolled, restored = rollback(client, reg, reason="bad release")
    assert (rolled.champion_before, rolled.champion_after, rolled.reason) == (strong, weak, "bad release")
    assert rolled.trigger == "manual"
    assert str(champion_version(client, reg).version) == weak
    assert is_served(client, reg, weak)  # re-imported: the store's latest model is the champion again
    assert restored.tag == served_model(client, reg, weak).tag
    with pytest.raises(LookupError, match="first champion"):
        rollback_target(client, reg)

    entries = history(client, reg)
    assert [(e["action"], e["version"]) for e in entries] == [
        ("rollback", weak), ("reject", worse_version), ("promote", strong), ("promote", weak),
    ]  # fmt: skip
    assert entries[2]["trigger"] == "drift in median_income"
    assert entries[2]["metrics_after"]["rmse"] < entries[2]["metrics_before"]["rmse"]


def test_the_decision_compares_training_split_fits_never_the_refits(
    reg: RegisterParams, params: Params, split: tuple
) -> None:
    """A refit learned the test houses, so its figures there prove nothing: each version's evidence is scored."""
    client = MlflowClient()
    X, y, X_test, y_test = split
    ols = fitted(params, split, {"model": "ols"})
    medium = fitted(params, split, {"model": "lightgbm", "n_estimators": 30, "num_leaves": 7})
    strong = fitted(params, split, {"model": "lightgbm", "n_estimators": 100, "num_leaves": 15})
    # Fitted on the test houses too, as a refit is: better there than any training-split fit.
    seen = build_model({"model": "lightgbm", "n_estimators": 100, "num_leaves": 15}, params.features, "none", seed=0)
    seen.fit(pd.concat([X, X_test]), np.r_[y, y_test])
    rmse = {name: regression_metrics(y_test, model.predict(X_test))["rmse"]
            for name, model in {"ols": ols, "medium": medium, "strong": strong, "seen": seen}.items()}  # fmt: skip
    assert rmse["seen"] < rmse["strong"] < rmse["medium"] < rmse["ols"]
    separate = reg.model_copy(update={"model_name": "registry-test-refit"})
    # A champion registered before the refit serves its training-split fit: it is its own evidence.
    first = client.get_model_version(separate.model_name, log_version(separate, medium))

    # The challenger's refit beats the champion, its training-split fit does not: refused.
    lucky = log_version(separate, seen, evidence=ols)
    refused = challenge(client, separate, lucky, first, X_test, y_test, "test")
    assert refused.action == "reject", refused.reason
    assert refused.metrics_after["rmse"] == pytest.approx(rmse["ols"])
    assert refused.metrics_before["rmse"] == pytest.approx(rmse["medium"])
    assert "USD as training-split fits on the same 500 test houses" in refused.reason

    # The challenger's refit loses to the champion, its training-split fit wins: promoted.
    modest = log_version(separate, ols, evidence=strong)
    promoted = challenge(client, separate, modest, first, X_test, y_test, "test")
    assert promoted.action == "promote", promoted.reason
    assert promoted.metrics_after["rmse"] == pytest.approx(rmse["strong"])

    # Against a champion with evidence, its evidence is scored, not the refit it serves.
    second = client.get_model_version(separate.model_name, modest)
    challenger = log_version(separate, seen, evidence=medium)
    decision = challenge(client, separate, challenger, second, X_test, y_test, "test")
    assert decision.action == "reject", decision.reason
    assert (decision.metrics_before["rmse"], decision.metrics_after["rmse"]) == pytest.approx(
        (rmse["strong"], rmse["medium"])
    )


@pytest.mark.parametrize("breakage", ["does not load", "prices NaN"])
def test_a_broken_challenger_is_refused(breakage: str, reg: RegisterParams, params: Params, split: tuple) -> None:
    client = MlflowClient()
    _, _, X_test, y_test = split
    if champion_version(client, reg) is None:
        crown(client, reg, challenge(client, reg, log_version(reg, fitted(params, split, {"model": "ols"})), None,
                                     X_test, y_test, "test"))  # fmt: skip
    champion = champion_version(client, reg)
    model = fitted(params, split, {"model": "ols"})
    if breakage == "prices NaN":
        model.named_steps["model"].coef_[:] = np.nan
    version = log_version(reg, model, corrupt=breakage == "does not load")
    decision = challenge(client, reg, version, champion, X_test, y_test, "test")
    assert decision.action == "reject"
    assert decision.reason.startswith("broken:"), decision.reason
    assert decision.champion_after == str(champion.version)
    assert str(champion_version(client, reg).version) == str(champion.version)


def test_a_model_below_the_floor_is_not_registered(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the experiment's default artifact folder is relative
    with tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        metrics_path = tmp_path / "metrics.json"
        metrics_path.write_text(
            json.dumps({"test": {"rmse": 60000.0, "r2": 0.7}, "quality_floor": {"met": False, "max_rmse": 45000}})
        )
        patched = params.model_copy(
            update={"evaluate": params.evaluate.model_copy(update={"metrics_path": metrics_path})}
        )
        with pytest.raises(NoChampionError, match="below the quality floor"):
            register(patched)
        client = MlflowClient()
        assert client.search_registered_models() == []
        (entry,) = history(client, params.register_)
        assert entry["action"] == "reject"
        assert entry["version"] is None
        assert entry["metrics_after"] == {"rmse": 60000.0, "r2": 0.7}


def test_a_project_registry_names_its_project_and_makes_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store, mlflow.db
    with pytest.raises(NoProjectError):
        ProjectRegistry(tmp_path)
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    registry = ProjectRegistry(tmp_path)
    assert registry.names.model_name == "housing-price-model"
    with pytest.raises(NoRegistryError, match="run the pipeline"):
        registry.client()
    assert not (tmp_path / "mlflow.db").exists()  # a reader never makes the store


def test_a_project_registry_reads_the_history_and_refuses_a_rollback_past_the_first(
    champion: dict, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry = ProjectRegistry(workspace.path)
    (first,) = registry.history()
    assert (first["action"], first["version"]) == ("promote", champion["version"])
    with pytest.raises(LookupError, match="first champion"):
        registry.rollback(reason="nothing before it")
