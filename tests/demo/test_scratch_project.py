"""The demo video's scratch copy of the project: what a retraining there writes stays there.

A real MLflow store (SQLite, local artifacts) is copied; new runs in the copy must land in the copy's
artifact folder while the original's runs stay readable, and the original store must not change.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow import MlflowClient

from scripts.fleet import MLFLOW_DB, PROJECT_FILES, project_env, scratch_project


def make_project(path: Path) -> str:
    """A project with every file the copy takes, and an MLflow store holding one run with an artifact."""
    path.mkdir()
    for name in PROJECT_FILES:
        if name.endswith((".yaml", ".lock")):
            (path / name).write_text(name)
        else:
            (path / name).mkdir()
    (path / "data" / "raw.csv").write_text("a,b\n1,2\n")
    (path / ".dvc" / "tmp").mkdir()
    (path / ".dvc" / "tmp" / "lock").write_text("")
    client = MlflowClient(f"sqlite:///{path / MLFLOW_DB}")
    experiment = client.create_experiment("housing", artifact_location=str(path / "mlruns" / "1"))
    run = client.create_run(experiment)
    note = path / "note.txt"
    note.write_text("from the original")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_new_runs_land_in_the_copy_and_the_original_stays_as_it_was(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    first_run = make_project(source)
    before = sorted(str(p.relative_to(source)) for p in (source / "mlruns").rglob("*"))

    project = scratch_project(tmp_path / "scratch", source)

    assert (project / "data" / "raw.csv").read_text() == "a,b\n1,2\n"
    assert not (project / ".dvc" / "tmp").exists()  # DVC's locks and state are the original's own
    assert "no_scm = true" in (project / ".dvc" / "config.local").read_text()
    uri = project_env(project)["MLFLOW_TRACKING_URI"]
    copy = MlflowClient(uri)
    experiment = copy.get_experiment_by_name("housing")
    assert experiment is not None
    assert Path(experiment.artifact_location) == (project / "mlruns" / experiment.experiment_id).resolve()
    run = copy.create_run(experiment.experiment_id)
    (tmp_path / "model.txt").write_text("retrained")
    copy.log_artifact(run.info.run_id, str(tmp_path / "model.txt"))
    assert (project / "mlruns" / experiment.experiment_id / run.info.run_id / "artifacts" / "model.txt").is_file()
    # The original run is in the copied store, its artifact read from where it was logged.
    note = mlflow.artifacts.download_artifacts(run_id=first_run, artifact_path="note.txt", tracking_uri=uri,
                                               dst_path=str(tmp_path / "read"))  # fmt: skip
    assert Path(note).read_text() == "from the original"

    original = MlflowClient(f"sqlite:///{source / MLFLOW_DB}")
    assert [r.info.run_id for r in original.search_runs([experiment.experiment_id])] == [first_run]
    assert sorted(str(p.relative_to(source)) for p in (source / "mlruns").rglob("*")) == before
