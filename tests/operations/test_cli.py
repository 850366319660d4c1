"""The `housing` command in process: history, rollback refusals, reload, retrain, drift and the shadow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from housing.jobs import job_lock
from operations.cli import main
from tests.workspace import ROOT, Workspace


def housing(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return int(exit_.value.code or 0)


@pytest.fixture
def in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow commands chdir into the project; come back afterwards, on MLflow's default store."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)


def test_history_prints_the_first_promotion(
    workspace: Workspace, champion: dict, in_project: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert housing("history", "--project-dir", str(workspace.path)) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert f"promote  v{champion['version']}" in line
    assert line.endswith("first champion")
    assert housing("history", "--json", "--project-dir", str(workspace.path)) == 0
    assert json.loads(capsys.readouterr().out)[0]["reason"] == "first champion"


def test_rollback_with_nowhere_to_go_is_refused(
    workspace: Workspace, tmp_path: Path, in_project: None, capsys: pytest.CaptureFixture[str]
) -> None:
    project = ["--project-dir", str(workspace.path), "--db", str(tmp_path / "p.db")]
    assert housing("rollback", *project) == 1
    assert "was the first champion" in capsys.readouterr().out
    assert housing("rollback", "--to", "999", *project) == 1
    assert "rollback refused" in capsys.readouterr().out


def test_reload_without_a_running_service_returns_at_once(
    tmp_path: Path, champion: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert housing("reload", "--db", str(tmp_path / "p.db")) == 0
    rollout = json.loads(capsys.readouterr().out)
    assert rollout == {"bento_tag": champion["bento_model"], "switched": False, "workers": []}


def test_retrain_finds_nothing_to_do_and_waits_its_turn(
    tmp_path: Path, champion: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    args = ["retrain", "--project-dir", str(tmp_path), "--db", str(tmp_path / "p.db")]
    assert housing(*args) == 0
    assert json.loads(capsys.readouterr().out)["message"] == "no drift, and accuracy on feedback within bounds"
    with job_lock(tmp_path):
        assert housing(*args) == 75
    assert capsys.readouterr().out.strip() == "a retraining is already running"


def test_drift_report_with_too_little_data(tmp_path: Path, champion: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert housing("drift", "--db", str(tmp_path / "p.db"), "--out", str(tmp_path / "drift")) == 0
    assert capsys.readouterr().out.strip() == "not enough data: 0 of 200 houses"
    assert json.loads((tmp_path / "drift" / "drift.json").read_text())["status"] == "insufficient_data"
    assert "Only 0 priced houses logged" in (tmp_path / "drift" / "drift.md").read_text()


def test_shadow_start_show_and_stop(
    workspace: Workspace,
    champion: dict,
    tmp_path: Path,
    in_project: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a copy of the session's project: its registry's history stays the other tests'."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("params.yaml", "mlflow.db"):
        shutil.copy(workspace.path / name, project / name)
    # From the project, as an operator runs it: importing a version downloads it through MLflow's default store.
    monkeypatch.chdir(project)
    where = ["--project-dir", str(project), "--db", str(tmp_path / "p.db")]
    assert housing("shadow", "show", *where) == 1
    assert "no challenger in shadow" in capsys.readouterr().err
    assert housing("shadow", "start", champion["version"], "--fraction", "0.5", *where) == 0
    started = json.loads(capsys.readouterr().out)
    assert (started["fraction"], started["rollout"]["workers"]) == (0.5, [])  # no service running: nobody to wait for
    assert housing("shadow", "show", *where) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["challenger_version"], shown["houses_shadowed"]) == (champion["version"], 0)
    assert shown["verdict"]["reason"].startswith("only 0 shadowed houses have feedback")
    assert housing("shadow", "stop", *where) == 0
    assert json.loads(capsys.readouterr().out)["stopped_version"] == champion["version"]
    with pytest.raises(SystemExit):
        main(["shadow", "stop", "3", *where])  # a version goes with start only
