"""`housing score` end to end: the session's champion from its MLflow registry, on MLflow's pyfunc and on Spark."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from operations import cli
from operations.bulk_score import PRICE_COLUMNS
from tests.workspace import BIN, Workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def houses(workspace: Workspace, test_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 test houses as a CSV with a column of their own, two of them broken."""
    rows = test_rows.head(300).assign(parcel=[f"p-{i}" for i in range(300)])
    rows.loc[rows.index[10], "latitude"] = 48.85
    rows.loc[rows.index[200], "households"] = np.nan
    path = tmp_path_factory.mktemp("score") / "houses.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def local(workspace: Workspace, houses: Path) -> tuple[pd.DataFrame, str, str]:
    """The local engine's output on ``houses``, its stdout and its stderr."""
    target = houses.with_name("local.parquet")
    scored = workspace.run(str(BIN / "housing"), "score", str(houses), str(target), "--chunk-rows", "64", check=False)
    assert scored.returncode == 1, scored.stdout + scored.stderr
    return pd.read_parquet(target), scored.stdout, scored.stderr


def test_the_champion_prices_a_file_as_pyfunc_does(
    local: tuple[pd.DataFrame, str, str], workspace: Workspace, houses: Path, champion: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out, stdout, stderr = local
    rows = pd.read_csv(houses)
    kept = rows.drop(index=[10, 200]).reset_index(drop=True)
    assert list(out.columns) == [*rows.columns, *PRICE_COLUMNS, "model_version"]
    assert out["parcel"].tolist() == kept["parcel"].tolist()
    assert set(out["model_version"]) == {champion["version"]}
    monkeypatch.chdir(workspace.path)  # the workspace's default store: sqlite:///mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    pyfunc = mlflow.pyfunc.load_model(f"models:/housing-price-model/{champion['version']}")
    expected = pyfunc.predict(kept.drop(columns="parcel"), params={"intervals": True})
    for name in PRICE_COLUMNS:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-12)
    assert "scored 298 of 300 rows" in stdout
    assert "2 rows rejected" in stderr


def test_bad_rows_are_rejected_with_their_row_and_rule(local: tuple[pd.DataFrame, str, str], houses: Path) -> None:
    rejects = pd.read_csv(houses.with_name("local.rejects.csv"))
    assert rejects[["row", "field", "rule"]].values.tolist() == [
        [11, "latitude", "less_than_equal"], [201, "households", "float_type"]]  # fmt: skip
    assert rejects["parcel"].tolist() == ["p-10", "p-200"]


def test_an_existing_output_stops_the_run_before_any_work(workspace: Workspace, houses: Path) -> None:
    target = houses.with_name("taken.csv")
    target.write_text("keep me\n")
    refused = workspace.run(str(BIN / "housing"), "score", str(houses), str(target), check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"housing score: {target}: exists; pass --overwrite to replace it"]
    assert target.read_text() == "keep me\n"
    unknown = workspace.run(str(BIN / "housing"), "score", str(houses), str(target), "--overwrite", "--model",
                            "models:/housing-price-model/999", check=False)  # fmt: skip
    assert unknown.returncode == 2
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr


def test_spark_prices_the_file_as_the_local_engine_does(
    local: tuple[pd.DataFrame, str, str], workspace: Workspace, houses: Path
) -> None:
    target = houses.with_name("spark.csv")
    scored = workspace.run(str(BIN / "housing"), "score", str(houses), str(target), "--engine", "spark",
                           "--spark-master", "local[2]", "--chunk-rows", "200", check=False)  # fmt: skip
    assert scored.returncode == 1, scored.stdout + scored.stderr
    out, expected = pd.read_csv(target), local[0]
    assert list(out.columns) == list(expected.columns)
    assert out["parcel"].tolist() == expected["parcel"].tolist()
    for name in PRICE_COLUMNS:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-6)
    assert pd.read_csv(houses.with_name("spark.rejects.csv"))["row"].tolist() == [11, 201]


def test_the_command_in_process_says_what_it_did(
    local: tuple[pd.DataFrame, str, str], workspace: Workspace, houses: Path, champion: dict,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after: pin_model points MLflow at the project
    target = houses.with_name("in-process.csv")
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["score", str(houses), str(target), "--project-dir", str(workspace.path)])
    finally:
        mlflow.set_tracking_uri(None)
    out, err = capsys.readouterr()
    assert exited.value.code == 1
    assert f"scored 298 of 300 rows with models:/housing-price-model/{champion['version']} into {target}" in out
    assert err.strip() == f"2 rows rejected (row, field and rule in {houses.with_name('in-process.rejects.csv')})"
    np.testing.assert_allclose(pd.read_csv(target)["price_usd"], local[0]["price_usd"], rtol=1e-12)
