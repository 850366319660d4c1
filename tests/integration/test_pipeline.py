"""The real DVC pipeline on a small sample, in a throwaway workspace.

Real DVC, a real MLflow tracking store and registry (MLflow's default
``sqlite:///mlflow.db`` inside the workspace) and a real BentoML model store.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from housing.columns import FEATURE_COLUMNS
from housing.model_format import load_model
from tests.workspace import Workspace, make_workspace, small_params

pytestmark = pytest.mark.integration

STAGES = ["ingest", "validate", "prepare", "train", "refit_effect", "evaluate", "refit", "register"]


def registry(ws: Workspace) -> dict:
    """What the workspace's default MLflow store says about the champion."""
    code = """
import json, mlflow
client = mlflow.MlflowClient()
v = client.get_model_version_by_alias("housing-price-model", "champion")
exp = client.get_experiment_by_name("housing-price-prediction")
runs = client.search_runs([exp.experiment_id], max_results=1000)
print(json.dumps({
    "tracking_uri": mlflow.get_tracking_uri(),
    "version": v.version, "run_id": v.run_id, "tags": v.tags,
    "runs": [{"id": r.info.run_id, "name": r.info.run_name, "parent": r.data.tags.get("mlflow.parentRunId"),
              "tags": r.data.tags, "params": r.data.params, "metrics": r.data.metrics} for r in runs],
}))
"""
    return json.loads(ws.python(code))


def test_every_stage_ran_in_order(workspace: Workspace) -> None:
    position = {stage: workspace.first_run.index(f"Running stage '{stage}'") for stage in STAGES}
    # The refit needs only the chosen configuration: DVC may run it before or after the evaluation.
    chain = [stage for stage in STAGES if stage != "refit"]
    assert [position[stage] for stage in chain] == sorted(position[stage] for stage in chain)
    assert position["train"] < position["refit"] < position["register"]
    # The feedback export (no prediction log here: header only) comes before the split it joins.
    assert workspace.first_run.index("Running stage 'feedback'") < workspace.first_run.index("Running stage 'prepare'")
    assert (workspace.path / "data" / "feedback" / "labeled.csv").read_text().startswith("longitude,")
    assert (workspace.path / "dvc.lock").is_file()


def test_reports(workspace: Workspace) -> None:
    reports = workspace.path / "reports"
    assert json.loads((reports / "data_validation.json").read_text())["valid"] is True
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics["families"]) == {"linear", "decision_tree", "random_forest", "gradient_boosting"}
    assert metrics["winner"] in metrics["families"]
    assert metrics["quality_floor"]["met"] is True
    assert 0.6 < metrics["test"]["r2"] < 1.0
    assert "## Why the winner won" in (reports / "model_report.md").read_text()
    for family in metrics["families"]:
        assert (reports / "figures" / "cv" / f"{family}_residuals.png").stat().st_size > 1000
    assert (reports / "figures" / "test" / "predicted_vs_actual.png").is_file()
    registration = json.loads((reports / "registration.json").read_text())
    assert registration["model_uri"] == f"models:/housing-price-model/{registration['version']}"


def test_mlflow_has_a_parent_run_per_family_with_child_runs(workspace: Workspace) -> None:
    runs = registry(workspace)["runs"]
    parents = {r["name"]: r for r in runs if r["tags"].get("role") in ("family_search", "challenger")}
    assert set(parents) == {"linear", "decision_tree", "random_forest", "gradient_boosting"}
    for name, parent in parents.items():
        children = [r for r in runs if r["parent"] == parent["id"]]
        assert len(children) == int(parent["params"]["n_candidates"]) >= 1, name
        for child in children:
            assert {"cv_rmse", "cv_mae", "cv_r2", "cv_fit_seconds"} <= set(child["metrics"])
            assert child["params"]["model"]
        assert parent["metrics"]["cv_rmse"] == min(c["metrics"]["cv_rmse"] for c in children)


def test_family_runs_hold_plots(workspace: Workspace) -> None:
    code = """
import json, mlflow
client = mlflow.MlflowClient()
exp = client.get_experiment_by_name("housing-price-prediction")
runs = client.search_runs([exp.experiment_id], "tags.role != 'x'", max_results=1000)
out = {}
for r in runs:
    if "mlflow.parentRunId" not in r.data.tags:
        out[r.info.run_name] = sorted(a.path for a in client.list_artifacts(r.info.run_id, "plots"))
print(json.dumps(out))
"""
    artifacts = json.loads(workspace.python(code))
    for family, paths in artifacts.items():
        assert {"plots/residuals.png", "plots/predicted_vs_actual.png", "plots/feature_importance.png"} <= set(paths), (
            family
        )


def test_champion_is_registered_and_tagged(workspace: Workspace) -> None:
    info = registry(workspace)
    # MLflow's own default store, mlflow.db in the working directory: no variable was set.
    assert info["tracking_uri"] == f"sqlite:///{workspace.path}/mlflow.db"
    lock = yaml.safe_load((workspace.path / "dvc.lock").read_text())
    raw_md5 = next(o["md5"] for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/raw/housing.csv")
    assert info["tags"]["data_version"] == raw_md5
    metrics = json.loads((workspace.path / "reports" / "metrics.json").read_text())
    assert float(info["tags"]["test_rmse"]) == pytest.approx(metrics["test"]["rmse"], rel=1e-5)
    assert info["tags"]["family"] == metrics["winner"]
    assert info["run_id"] == metrics["families"][metrics["winner"]]["run_id"]


def test_champion_loads_from_the_registry_and_predicts_raw_records(workspace: Workspace) -> None:
    code = """
import json, mlflow, numpy as np, pandas as pd
model = mlflow.pyfunc.load_model("models:/housing-price-model@champion")
df = pd.read_csv("data/processed/test.csv").head(5)
X = df.drop(columns="median_house_value")
X.loc[1, "total_bedrooms"] = np.nan
print(json.dumps({"pred": model.predict(X).tolist(),
                  "bounds": model.predict(X, params={"intervals": True, "coverage": 0.8}).to_dict("list"),
                  "inputs": [c["name"] for c in model.metadata.get_input_schema().to_dict()]}))
"""
    out = json.loads(workspace.python(code))
    assert out["inputs"] == list(FEATURE_COLUMNS)
    assert len(out["pred"]) == 5
    assert all(10_000 < p < 800_000 for p in out["pred"])
    X = (
        pd.read_csv(workspace.path / "data" / "processed" / "test.csv")
        .head(5)
        .assign(total_bedrooms=lambda d: d["total_bedrooms"].where(d.index != 1))
    )
    model = load_model(workspace.path / "models" / "served.skops")
    np.testing.assert_allclose(out["pred"], model.predict(X))
    # On request, the registered model answers the interval the trained one gives (here at 80%), price inside.
    np.testing.assert_allclose(out["bounds"]["price_usd"], out["pred"])
    lower, upper = model.predict_interval(X, 0.8).T
    np.testing.assert_allclose([out["bounds"]["lower_usd"], out["bounds"]["upper_usd"]], [lower, upper])
    assert (lower < np.asarray(out["pred"])).all()


def test_the_served_model_is_the_refit_and_the_decision_s_fit_is_its_evidence(workspace: Workspace) -> None:
    info = registry(workspace)
    tags = info["tags"]
    processed = workspace.path / "data" / "processed"
    labelled = len(pd.read_csv(processed / "train.csv")) + len(pd.read_csv(processed / "test.csv"))
    registration = json.loads((workspace.path / "reports" / "registration.json").read_text())
    assert (registration["served_fit"], registration["fit_rows"]) == ("all_labelled_rows", labelled)
    assert (tags["served_fit"], tags["fit_rows"]) == ("all_labelled_rows", str(labelled))
    lock = yaml.safe_load((workspace.path / "dvc.lock").read_text())
    feedback = next(o["md5"] for o in lock["stages"]["feedback"]["outs"] if o["path"] == "data/feedback/labeled.csv")
    assert tags["feedback_version"] == registration["feedback_version"] == feedback
    assert registration["evidence_model"] == tags["evidence_model"]
    code = f"""
import json, mlflow, pandas as pd
X = pd.read_csv("data/processed/test.csv").drop(columns="median_house_value")
evidence = mlflow.get_logged_model("{tags["evidence_model"]}".removeprefix("models:/"))
print(json.dumps({{"served": mlflow.pyfunc.load_model("models:/housing-price-model@champion").predict(X).tolist(),
                  "evidence": mlflow.pyfunc.load_model("{tags["evidence_model"]}").predict(X).tolist(),
                  "evidence_run": evidence.source_run_id, "evidence_name": evidence.name}}))
"""
    out = json.loads(workspace.python(code))
    X = pd.read_csv(workspace.path / "data" / "processed" / "test.csv")[list(FEATURE_COLUMNS)]
    # The registered model is the refit; the training-split fit the decision scored is logged on the same run.
    np.testing.assert_allclose(out["served"], load_model(workspace.path / "models" / "served.skops").predict(X))
    np.testing.assert_allclose(out["evidence"], load_model(workspace.path / "models" / "model.skops").predict(X))
    assert (out["evidence_run"], out["evidence_name"]) == (info["run_id"], "evidence")
    assert not np.allclose(out["served"], out["evidence"])
    # Its test figures, tagged and in the decision, are the evidence's.
    y = pd.read_csv(workspace.path / "data" / "processed" / "test.csv")["median_house_value"].to_numpy()
    rmse = float(np.sqrt(np.mean((y - np.asarray(out["evidence"])) ** 2)))
    assert float(tags["test_rmse"]) == pytest.approx(rmse, rel=1e-5)
    assert registration["decision"]["metrics_after"]["rmse"] == pytest.approx(rmse)
    card = json.loads((workspace.path / "models" / "model_card.json").read_text())
    assert f"refitted on all {labelled:,} labelled block groups" in card["model_details"]["fit"]
    report = (workspace.path / "reports" / "model_report.md").read_text()
    assert f"The served model is this configuration refitted on all {labelled:,} labelled rows" in report
    effect = json.loads((workspace.path / "reports" / "refit_effect.json").read_text())
    assert (effect["rows"], len(effect["per_fold"])) == (labelled, 2)


def test_bentoml_store_holds_the_champion(workspace: Workspace) -> None:
    result = workspace.run("bentoml", "models", "get", "housing-price-model:latest", "-o", "json")
    model = json.loads(result.stdout)
    info = registry(workspace)
    assert model["labels"]["mlflow_version"] == str(info["version"])
    assert model["metadata"]["mlflow_run_id"] == info["run_id"]
    assert model["metadata"]["data_version"] == info["tags"]["data_version"]
    assert workspace.run("python", "-m", "training.register", "--check").returncode == 0


def test_register_check_notices_a_moved_store(workspace: Workspace, tmp_path: Path) -> None:
    env = workspace.env | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/elsewhere.db"}
    assert workspace.run("python", "-m", "training.register", "--check", check=False, env=env).returncode == 1


def test_second_repro_does_no_work(workspace: Workspace) -> None:
    result = workspace.run("dvc", "repro")
    output = result.stdout + result.stderr
    # Only the feedback export re-reads the prediction log; its unchanged output re-runs nothing.
    assert re.findall(r"Running stage '(\w+)'", output) == ["feedback"]
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output


def test_push_then_pull_into_a_clean_copy_restores_the_data(workspace: Workspace, tmp_path: Path) -> None:
    workspace.run("dvc", "push")
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(workspace.path / name, clone)
    # What git holds: the code and the small uncached outputs (reports).
    for folder in ("housing", "training", "reports"):
        shutil.copytree(workspace.path / folder, clone / folder)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=clone, env=workspace.env, check=True)
    shutil.copy(workspace.path / ".dvc" / "config", clone / ".dvc" / "config")
    pulled = subprocess.run(["dvc", "pull"], cwd=clone, env=workspace.env, capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    for path in ("data/raw/housing.csv", "data/processed/train.csv", "data/processed/test.csv", "models/model.skops",
                 "models/served.skops"):  # fmt: skip
        assert (clone / path).read_bytes() == (workspace.path / path).read_bytes(), path
    status = subprocess.run(["dvc", "status"], cwd=clone, env=workspace.env, capture_output=True, text=True)
    # Everything is in place; only the feedback export always re-reads the prediction log.
    assert status.stdout.split() == ["feedback:", "always", "changed"]


def test_same_command_gives_the_same_model(workspace: Workspace, tmp_path: Path) -> None:
    again = Workspace(tmp_path / "again", workspace.env, "")
    shutil.copytree(workspace.path, again.path, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    # Only the train and refit stages run again, on the data the first run prepared.
    again.run("dvc", "repro", "--force", "--single-item", "train")
    again.run("dvc", "repro", "--force", "--single-item", "refit")
    test = pd.read_csv(workspace.path / "data" / "processed" / "test.csv")[list(FEATURE_COLUMNS)]
    for name in ("model.skops", "served.skops"):
        first = load_model(workspace.path / "models" / name).predict(test)
        second = load_model(again.path / "models" / name).predict(test)
        np.testing.assert_array_equal(first, second)
        # Byte for byte, so dvc.lock records the same hash for the model.
        assert (workspace.path / "models" / name).read_bytes() == (again.path / "models" / name).read_bytes(), name


def test_bad_data_stops_the_pipeline_at_validation(workspace: Workspace, tmp_path: Path, housing: pd.DataFrame) -> None:
    bad_source = tmp_path / "bad.csv"
    housing.head(500).assign(ocean_proximity="ON THE MOON").to_csv(bad_source, index=False)
    path = tmp_path / "bad-repo"
    ws = Workspace(path, make_workspace(path, bad_source, small_params()), "")
    result = ws.run("dvc", "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "column 'ocean_proximity'" in output
    assert "isin" in output
    assert "500 row(s)" in output
    assert "Running stage 'train'" not in output
    assert not (path / "models" / "model.skops").exists()
