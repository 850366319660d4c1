"""`housing score`'s file handling with a stand-in scorer: formats, chunks, rejects, refusals before any work.

The real engines (MLflow's pyfunc here, Spark's spark_udf) price the same files in tests/operations/test_score_cli.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from housing.columns import FEATURE_COLUMNS
from operations.bulk_score import PRICE_COLUMNS, ScoreError, ScoreJob, check_job, local_scorer, score_file
from tests.synthetic import synthetic_housing


def fake_scorer(houses: pd.DataFrame) -> pd.DataFrame:
    """A price that shows which house it is (income x 100,000 USD), with bounds 10% either side."""
    assert houses.dtypes.drop("ocean_proximity").eq(float).all()  # what a model gets: floats and the category
    price = houses["median_income"].to_numpy() * 100_000
    return pd.DataFrame({"price_usd": price, "lower_usd": price * 0.9, "upper_usd": price * 1.1})


def houses_file(path: Path, rows: int = 50) -> pd.DataFrame:
    houses = synthetic_housing(rows, seed=3)[list(FEATURE_COLUMNS)].assign(parcel=[f"p-{i}" for i in range(rows)])
    houses.loc[houses.index[4], "total_bedrooms"] = np.nan  # missing is allowed
    if path.suffix == ".csv":
        houses.to_csv(path, index=False)
    else:
        houses.to_parquet(path, index=False)
    return houses


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


@pytest.mark.parametrize(("source", "target"), [("in.csv", "out.csv"), ("in.csv", "out.parquet"),
                                                ("in.parquet", "out.csv"), ("in.parquet", "out.parquet")])  # fmt: skip
def test_every_input_column_comes_back_with_its_price_in_order(tmp_path: Path, source: str, target: str) -> None:
    houses = houses_file(tmp_path / source)
    job = ScoreJob(tmp_path / source, tmp_path / target, chunk_rows=7)
    assert check_job(job) == (None if source.endswith(".csv") else 50)
    seen: list[int] = []
    summary = score_file(job, fake_scorer, "7", seen.append)
    out = read(job.target)
    assert list(out.columns) == [*houses.columns, *PRICE_COLUMNS, "model_version"]
    pd.testing.assert_frame_equal(out[list(houses.columns)], houses, check_dtype=False)
    np.testing.assert_allclose(out["price_usd"], houses["median_income"] * 100_000)
    assert out["model_version"].astype(str).eq("7").all()
    assert (summary.rows, summary.scored, summary.rejected, sum(seen), len(seen)) == (50, 50, 0, 50, 8)
    assert not job.rejects.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_bad_rows_go_to_the_rejects_file_with_their_row_number_and_rule(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    houses_file(source, rows=20)
    lines = source.read_text().splitlines()
    broken = {3: ("latitude", "48.85", "less_than_equal"), 9: ("median_income", "lots", "float_type"),
              10: ("households", "", "float_type"), 17: ("ocean_proximity", "MOON", "literal_error")}  # fmt: skip
    header = lines[0].split(",")
    for row, (field, value, _) in broken.items():
        cells = lines[row].split(",")  # line `row` is data row `row` (the header is line 0)
        cells[header.index(field)] = value
        lines[row] = ",".join(cells)
    cells = lines[12].split(",")
    cells[header.index("total_bedrooms")] = str(float(cells[header.index("total_rooms")]) + 1)
    lines[12] = ",".join(cells)
    source.write_text("\n".join(lines) + "\n")
    job = ScoreJob(source, tmp_path / "out.parquet", chunk_rows=4)
    summary = score_file(job, fake_scorer, "7")
    rejects = pd.read_csv(tmp_path / "out.rejects.csv", dtype={"median_income": str})
    broken[12] = ("total_bedrooms", "", "value_error")
    assert list(zip(rejects["row"], rejects["field"], rejects["rule"], strict=True)) == [
        (row, field, rule) for row, (field, _, rule) in sorted(broken.items())
    ]
    assert rejects.loc[rejects["row"] == 9, "median_income"].item() == "lots"  # the row as it came
    assert "must not exceed total_rooms" in rejects.loc[rejects["row"] == 12, "error"].item()
    out = read(job.target)
    assert (summary.rows, summary.scored, summary.rejected, len(out)) == (20, 15, 5, 15)
    assert not out["parcel"].isin([f"p-{row - 1}" for row in broken]).any()


def test_what_cannot_work_stops_before_any_work_in_one_line(tmp_path: Path) -> None:
    houses_file(tmp_path / "in.csv")
    pd.read_csv(tmp_path / "in.csv").drop(columns=["latitude", "households"]).to_csv(tmp_path / "few.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "taken.csv").write_text("x\n")
    refusals = {
        ScoreJob(tmp_path / "none.csv", tmp_path / "o.csv", 10): "none.csv: no such file",
        ScoreJob(tmp_path / "in.json", tmp_path / "o.csv", 10): "not a CSV or Parquet file",
        ScoreJob(tmp_path / "in.csv", tmp_path / "o.xlsx", 10): "not a CSV or Parquet file",
        ScoreJob(tmp_path / "few.csv", tmp_path / "o.csv", 10): "missing columns latitude, households",
        ScoreJob(tmp_path / "broken.parquet", tmp_path / "o.csv", 10): "cannot be read as parquet",
        ScoreJob(tmp_path / "in.csv", tmp_path / "taken.csv", 10): "taken.csv: exists; pass --overwrite",
        ScoreJob(tmp_path / "in.csv", tmp_path / "in.csv", 10, overwrite=True): "must not be the input",
        ScoreJob(tmp_path / "in.csv", tmp_path / "no" / "o.csv", 10): "no such folder",
    }
    for job, reason in refusals.items():
        with pytest.raises(ScoreError, match=reason) as refused:
            check_job(job)
        assert "\n" not in str(refused.value)
    check_job(ScoreJob(tmp_path / "in.csv", tmp_path / "taken.csv", 10, overwrite=True))


def test_an_old_rejects_file_does_not_outlive_a_clean_run(tmp_path: Path) -> None:
    houses_file(tmp_path / "in.csv")
    job = ScoreJob(tmp_path / "in.csv", tmp_path / "out.csv", 100, overwrite=True)
    job.rejects.write_text("row,field\n1,latitude\n")
    score_file(job, fake_scorer, "7")
    assert not job.rejects.exists()


def test_a_failed_run_leaves_no_output(tmp_path: Path) -> None:
    houses_file(tmp_path / "in.csv")
    job = ScoreJob(tmp_path / "in.csv", tmp_path / "out.parquet", 10)

    def failing(houses: pd.DataFrame) -> pd.DataFrame:
        if failing.calls:  # type: ignore[attr-defined]
            raise RuntimeError("the model went away")
        failing.calls += 1  # type: ignore[attr-defined]
        return fake_scorer(houses)

    failing.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        score_file(job, failing, "7")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_the_spark_engine_says_how_to_install_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from operations import spark_engine

    monkeypatch.setitem(sys.modules, "pyspark", None)  # as if the extra were not installed
    hint = r"pip install '\.\[spark\]'.*make tools"
    with pytest.raises(ScoreError, match=hint), spark_engine.spark_scorer("models:/m/1", "local"):
        pass


class IncomePricer(mlflow.pyfunc.PythonModel):
    """An MLflow model of no flavor of this project's: one price per house, no intervals."""

    def predict(self, context: object, model_input: pd.DataFrame) -> np.ndarray:
        return model_input["median_income"].to_numpy() * 100_000


def test_a_model_without_intervals_prices_every_row_and_leaves_the_bounds_empty(tmp_path: Path) -> None:
    mlflow.pyfunc.save_model(tmp_path / "model", python_model=IncomePricer(), pip_requirements=[])
    houses = houses_file(tmp_path / "in.csv")
    job = ScoreJob(tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=20)
    summary = score_file(job, local_scorer(str(tmp_path / "model")), "1")
    out = read(tmp_path / "out.csv")
    assert (summary.scored, summary.rejected) == (50, 0)
    np.testing.assert_allclose(out["price_usd"], houses["median_income"] * 100_000)
    assert out[["lower_usd", "upper_usd"]].isna().all().all()
