"""A shadow from start to promotion (housing.shadow) against a real MLflow store, BentoML store and prediction log:
a challenger that beat the champion on too few labelled houses is refused, and promoted once it has enough; each
decision is in the history, with the shadow's figures, and in the challenger's model card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from housing import shadow
from housing.columns import FEATURE_COLUMNS
from housing.log.writer import PredictionLog, RequestRows
from housing.params import Params, RegisterParams, load_params
from housing.registry import Decision, ProjectRegistry, crown, history, is_served
from tests.housing import test_registry
from tests.housing.test_registry import fitted, log_version
from tests.workspace import ROOT

# The registry tests' split of the synthetic sample: a fixture.
split = test_registry.split


# The registry tests' throwaway tracking store and names: a fixture.
reg = test_registry.reg


@pytest.fixture(scope="module")
def names(reg: RegisterParams) -> RegisterParams:
    """Model names no other test uses (the session's BentoML store is shared)."""
    return reg.model_copy(update={"model_name": "shadow-test-model", "bento_model_name": "shadow-test-model",
                                  "decisions_experiment": "shadow-test-decisions"})  # fmt: skip


@pytest.fixture
def project(names: RegisterParams, tmp_path: Path) -> Path:
    """A project whose params.yaml names the test's model and asks for 50 labelled houses."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["register"] |= names.model_dump(include={"model_name", "bento_model_name", "experiment",
                                                 "decisions_experiment"})  # fmt: skip
    raw["shadow"] = {"min_labelled": 50, "p_value": 0.05}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def live_traffic(
    log: PredictionLog, houses: pd.DataFrame, versions: tuple[str, str], champion: np.ndarray, challenger: np.ndarray
) -> None:
    """One batch request priced by the champion, its houses priced again in shadow by the challenger."""
    n = len(houses)
    columns = {name: houses[name].tolist() for name in FEATURE_COLUMNS}
    shared = {
        "request_id": "live",
        "endpoint": "predict_batch",
        "ts": 1.0,
        "model_version": versions[0],
        "latency_ms": 9.0,
    }
    log.add(RequestRows({"idx": range(n), "price_usd": champion.tolist(), "lower_usd": [None] * n,
                         "upper_usd": [None] * n, **columns}, shared))  # fmt: skip
    log.add_shadow(RequestRows(
        {"request_id": ["live"] * n, "idx": list(range(n)), "endpoint": ["predict_batch"] * n,
         "champion_version": [versions[0]] * n, "champion_price_usd": champion.tolist(),
         "price_usd": challenger.tolist(), "lower_usd": [None] * n, "upper_usd": [None] * n},
        {"ts": 2.0, "model_version": versions[1], "latency_ms": 5.0, "batch_houses": n},
    ))  # fmt: skip
    assert log.flush()


def test_a_challenger_is_promoted_only_on_enough_evidence(
    names: RegisterParams, params: Params, split: tuple, project: Path, tmp_path: Path
) -> None:
    client = MlflowClient()
    _, _, X_test, y_test = split
    weak_model = fitted(params, split, {"model": "ols"})
    strong_model = fitted(params, split, {"model": "lightgbm", "n_estimators": 100, "num_leaves": 15})
    weak, strong = log_version(names, weak_model), log_version(names, strong_model)
    crown(client, names, Decision("promote", weak, "first champion", None, weak))
    registry = ProjectRegistry(project)

    started = shadow.start(registry, PredictionLog(tmp_path / "unused.db").store, strong, fraction=0.5)
    assert started["bento_tag"].startswith("shadow-test-model-challenger:")
    assert registry.shadow() == {"champion": weak, "challenger": strong, "fraction": 0.5}
    assert is_served(client, names, weak)  # the champion's BentoML name keeps the champion as its latest model

    log = PredictionLog(tmp_path / "predictions.db", interval_s=0.01)
    live_traffic(log, X_test, (weak, strong), weak_model.predict(X_test), strong_model.predict(X_test))
    for idx in range(30):
        assert log.record_feedback("live", idx, float(y_test[idx]), authenticated=True)
    refused = shadow.promote(registry, log.store, load_params(project / "params.yaml"))
    assert not refused["promoted"]
    assert refused["decision"]["reason"].startswith("shadow: only 30 shadowed houses have feedback; at least 50")
    assert registry.shadow()["champion"] == weak  # nothing moved
    assert registry.shadow()["challenger"] == strong

    for idx in range(30, len(y_test)):
        assert log.record_feedback("live", idx, float(y_test[idx]), authenticated=True)
    promoted = shadow.promote(registry, log.store, load_params(project / "params.yaml"))
    assert promoted["promoted"], promoted["decision"]["reason"]
    assert promoted["decision"]["reason"].startswith("shadow: the challenger beat the champion")
    assert promoted["evidence"]["labelled"]["houses"] == len(y_test)
    assert registry.shadow() == {"champion": strong, "challenger": None, "fraction": None}
    assert is_served(client, names, strong)
    assert promoted["rollout"]["workers"] == []  # no service is running: nobody to wait for

    entries = history(client, names)
    assert [(e["action"], e["version"], e["trigger"]) for e in entries[:2]] == [
        ("promote", strong, "shadow"), ("reject", strong, "shadow")
    ]  # fmt: skip
    accepted = entries[0]
    assert accepted["metrics_after"]["shadow_rmse"] < accepted["metrics_before"]["shadow_rmse"]
    assert accepted["metrics_after"]["shadow_labelled"] == len(y_test)
    assert accepted["metrics_after"]["shadow_wilcoxon_p"] < 0.05
    card = client.get_model_version(names.model_name, strong).description
    assert card.count("## Live shadow evaluation") == 2
    assert "Decision: promoted: the challenger beat the champion" in card
    with pytest.raises(shadow.NoShadowError):
        shadow.promote(registry, log.store, load_params(project / "params.yaml"))
    log.close()


def test_stopping_a_shadow_removes_the_alias(
    names: RegisterParams, params: Params, split: tuple, project: Path, tmp_path: Path
) -> None:
    registry = ProjectRegistry(project)
    store = PredictionLog(tmp_path / "p.db").store
    version = log_version(names, fitted(params, split, {"model": "ols"}))
    shadow.start(registry, store, version)
    assert registry.shadow()["challenger"] == version
    assert shadow.stop(registry, store)["stopped_version"] == version
    assert registry.shadow()["challenger"] is None
    assert shadow.stop(registry, store)["stopped_version"] is None
    with pytest.raises(ValueError, match="fraction"):
        registry.start_shadow(version, fraction=0.0)
