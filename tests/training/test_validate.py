from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from housing.params import Params
from tests.synthetic import synthetic_housing
from training import validate
from training.validate import DataValidationError, read_raw, validate_file, validate_frame


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Synthetic raw data, read back through the stage's own reader."""
    return read_raw(write(synthetic_housing(3000, seed=1), tmp_path_factory.mktemp("raw") / "housing.csv"))


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def only(report) -> validate.Violation:
    assert not report.valid
    assert len(report.violations) == 1, report.summary()
    return report.violations[0]


def test_synthetic_data_passes(raw: pd.DataFrame, params: Params) -> None:
    assert validate_frame(raw, params.validate_).valid


def test_real_data_passes(housing_csv: Path, params: Params) -> None:
    report = validate_file(housing_csv, params.validate_)
    assert report.valid, report.summary()
    assert report.rows > 10_000
    assert report.missing["total_bedrooms"] > 0  # real missing values, within budget


def test_missing_column(raw: pd.DataFrame, params: Params, tmp_path: Path) -> None:
    v = only(validate_file(write(raw.drop(columns="households"), tmp_path / "x.csv"), params.validate_))
    assert (v.column, v.check) == ("households", "column_in_dataframe")


def test_unexpected_column(raw: pd.DataFrame, params: Params) -> None:
    v = only(validate_frame(raw.assign(owner="x"), params.validate_))
    assert (v.column, v.check) == ("owner", "column_in_schema")


def test_text_in_numeric_column(raw: pd.DataFrame, params: Params, tmp_path: Path) -> None:
    bad = raw.copy()
    bad.loc[[3, 8], "median_income"] = "lots"
    v = only(validate_file(write(bad, tmp_path / "x.csv"), params.validate_))
    assert v.column == "median_income"
    assert v.check.startswith("coerce_dtype")
    assert v.rows == 2


def test_negative_population(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[[1, 2, 3], "population"] = "-5"
    v = only(validate_frame(bad, params.validate_))
    assert v.column == "population"
    assert v.check.startswith("in_range")
    assert v.rows == 3
    assert "column 'population'" in str(v)
    assert "3 row(s)" in str(v)


def test_coordinates_outside_california(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[0, "latitude"] = "48.85"
    assert only(validate_frame(bad, params.validate_)).column == "latitude"


def test_unknown_category(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[5, "ocean_proximity"] = "NEAR LAKE"
    v = only(validate_frame(bad, params.validate_))
    assert v.column == "ocean_proximity"
    assert v.check.startswith("isin")
    assert v.rows == 1


def test_missing_value_budget(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[: len(bad) // 10, "total_bedrooms"] = None
    v = only(validate_frame(bad, params.validate_))
    assert v.column == "total_bedrooms"
    assert v.check.startswith("missing_fraction")
    assert v.rows == bad["total_bedrooms"].isna().sum()


def test_missing_value_in_required_column(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[7, "median_income"] = None
    v = only(validate_frame(bad, params.validate_))
    assert v.column == "median_income"
    assert v.rows == 1


def test_duplicate_budget(raw: pd.DataFrame, params: Params) -> None:
    v = only(validate_frame(pd.concat([raw, raw.head(200)], ignore_index=True), params.validate_))
    assert v.column is None
    assert v.check.startswith("duplicate_fraction")
    assert v.rows == 200


def test_empty_file(params: Params, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    v = only(validate_file(path, params.validate_))
    assert "readable CSV" in v.check


def test_header_only(raw: pd.DataFrame, params: Params, tmp_path: Path) -> None:
    v = only(validate_file(write(raw.head(0), tmp_path / "header.csv"), params.validate_))
    assert v.check.startswith("min_rows")
    assert v.rows == 0


def test_several_problems_are_all_reported(raw: pd.DataFrame, params: Params) -> None:
    bad = raw.copy()
    bad.loc[1, "population"] = "-1"
    bad.loc[2, "ocean_proximity"] = "MARS"
    report = validate_frame(bad.drop(columns="households"), params.validate_)
    assert {v.column for v in report.violations} == {"population", "ocean_proximity", "households"}
    with pytest.raises(DataValidationError, match=r"population.*ocean_proximity|ocean_proximity.*population"):
        raise DataValidationError(report)


def test_stage_writes_report_and_fails_on_bad_data(
    raw: pd.DataFrame, params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    bad = raw.copy()
    bad.loc[0, "population"] = "-9"
    raw_path = write(bad, tmp_path / "raw.csv")
    report_path = tmp_path / "report.json"
    patched = params.model_copy(
        update={
            "data": params.data.model_copy(update={"raw_path": raw_path}),
            "validate_": params.validate_.model_copy(update={"report_path": report_path}),
        }
    )
    monkeypatch.setattr(validate, "load_params", lambda: patched)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        validate.main()
    assert exit_info.value.code == 1
    assert "column 'population'" in caplog.text
    assert "1 row(s)" in caplog.text
    report = json.loads(report_path.read_text())
    assert report["valid"] is False
    assert report["violations"] == [{"column": "population", "check": "in_range(0, 1e+07)", "rows": 1}]
