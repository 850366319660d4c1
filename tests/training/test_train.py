"""train ▸ refit ▸ evaluate ▸ register in process on a small sample, into a throwaway MLflow store.

The integration tests run the same steps as DVC stages in subprocesses; this
one exercises them where the test process can see inside (and measure them).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.model_card import CARD_FILE, ModelCard
from housing.model_format import extra_file, load_model
from housing.params import Params
from tests.workspace import small_params
from training import evaluate, refit, refit_effect, register, train
from training.feedback import FEEDBACK_ID
from training.prepare import load_split, split


@pytest.fixture
def small(tmp_path: Path, sample: pd.DataFrame, housing_csv: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    raw = small_params()
    for section, key in [("data", "raw_path"), ("validate", "report_path"), ("prepare", "train_path"),
                         ("prepare", "test_path"), ("prepare", "feedback_path"), ("train", "model_path"),
                         ("train", "results_path"), ("train", "winner_path"), ("refit", "model_path"),
                         ("refit", "summary_path"), ("refit", "effect_path"), ("evaluate", "metrics_path"),
                         ("evaluate", "report_path"), ("evaluate", "figures_dir"),
                         ("register", "registration_path")]:  # fmt: skip
        raw[section][key] = str(tmp_path / raw[section][key])
    raw["register"]["bento_model_name"] = "housing-price-model-unit"
    params = Params.model_validate(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    Path(params.data.raw_path).parent.mkdir(parents=True)
    Path(params.data.raw_path).write_bytes(housing_csv.read_bytes())
    Path(params.validate_.report_path).parent.mkdir(parents=True)
    Path(params.validate_.report_path).write_text("{}")
    train_df, test_df = split(sample, params.prepare)
    Path(params.prepare.train_path).parent.mkdir(parents=True)
    train_df.to_csv(params.prepare.train_path, index=False)
    test_df.to_csv(params.prepare.test_path, index=False)
    Path(params.prepare.feedback_path).parent.mkdir(parents=True)
    Path(params.prepare.feedback_path).write_text(",".join([*FEATURE_COLUMNS, TARGET_COLUMN, FEEDBACK_ID]) + "\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield params
    mlflow.set_tracking_uri(None)


def test_train_evaluate_register_also_into_a_store_that_lost_the_run(small: Params) -> None:
    results = train.run(small)
    assert set(results["families"]) == set(small.train.families)
    assert Path(small.train.model_path).stat().st_size > 0
    served = refit.run(small)
    X_all, _ = refit.labelled_rows(small)
    assert served["rows"] == len(X_all) > results["train_rows"]
    effect = refit_effect.run(small)
    assert len(effect["per_fold"]) == small.refit.effect_folds * small.refit.effect_repeats

    metrics = evaluate.evaluate(small)
    assert metrics["winner"] == results["winner"]
    assert metrics["test"]["r2"] > 0.6
    report = evaluate.render_report(metrics, small.evaluate.figures_dir, small.evaluate.report_path)
    Path(small.evaluate.metrics_path).write_text(json.dumps(metrics))
    Path(small.evaluate.report_path).write_text(report)
    assert (small.evaluate.figures_dir / "test" / "residuals.png").is_file()

    registration = register.register(small)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("housing-price-model", "champion")
    assert str(version.version) == registration["version"]
    assert version.tags["data_version"] == registration["data_version"]
    # The registered model is the refit on every labelled row; the training-split fit the decision scored is the
    # version's evidence, logged on the same run.
    assert (registration["served_fit"], registration["fit_rows"]) == ("all_labelled_rows", served["rows"])
    X_test, _ = load_split(small.prepare.test_path)
    registered = mlflow.pyfunc.load_model(f"models:/housing-price-model/{version.version}").predict(X_test)
    np.testing.assert_array_equal(registered, load_model(small.refit.model_path).predict(X_test))
    evidence_uri = version.tags[register.EVIDENCE_TAG]
    evidence = mlflow.pyfunc.load_model(evidence_uri).predict(X_test)
    np.testing.assert_array_equal(evidence, load_model(small.train.model_path).predict(X_test))
    assert mlflow.get_logged_model(evidence_uri.removeprefix("models:/")).source_run_id == version.run_id
    assert register.champion_available(small)
    assert registration["decision"]["action"] == "promote"
    assert registration["decision"]["reason"] == "first champion"
    # The version's card travels in its model folder; its figures are the registry's, and it is the description.
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/housing-price-model/{version.version}"))
    card = ModelCard.model_validate_json((folder / extra_file(CARD_FILE)).read_text())
    for name in ("rmse", "mae", "r2"):
        assert f"{card.metrics['test'][name]:.6g}" == version.tags[f"test_{name}"]
    slices = {column: {value: figures.model_dump() for value, figures in values.items()}
              for column, values in card.slices.items()}  # fmt: skip
    assert slices == metrics["slices"]
    assert card.metrics["intervals"] == metrics["intervals"]
    assert card.metrics["refit_effect"]["rmse_gain"] == effect["rmse"]["gain"]
    assert f"refitted on all {served['rows']:,} labelled block groups" in card.model_details["fit"]
    assert version.description == card.with_version("housing-price-model", str(version.version)).to_markdown()
    assert f"# Model card: housing-price-model v{version.version}" in version.description
    # Registering the same model again (the store kept the run) makes a new version, which is no
    # better than the champion it equals: refused, and the alias stays.
    again = register.register(small)
    assert again["decision"]["action"] == "reject"
    assert again["decision"]["version"] == str(int(registration["version"]) + 1)
    assert again["decision"]["metrics_after"] == again["decision"]["metrics_before"]
    assert again["version"] == registration["version"]
    assert str(client.get_model_version_by_alias("housing-price-model", "champion").version) == again["version"]

    # A store that lost the training run (moved, or a fresh one): registration logs a run of its own, naming the
    # search run it came from. (Here rather than in a test of its own: training again would double the time.)
    mlflow.set_tracking_uri(f"sqlite:///{Path.cwd()}/moved.db")
    moved = register.register(small)
    run = mlflow.MlflowClient().get_run(moved["run_id"])
    assert run.info.run_name.endswith("-registration")
    assert run.data.tags["search_run_id"] == metrics["families"][metrics["winner"]]["run_id"]
