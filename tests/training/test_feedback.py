"""Labeled feedback from the service's prediction log, and how it joins the split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN
from housing.log.queries import LogReader
from housing.log.store import SQLiteStore
from tests.housing.log.rows import give_feedback, row
from tests.stores.engines import LogDatabase
from training import feedback, prepare
from training.feedback import COLUMNS, FEEDBACK_ID, labeled_feedback
from training.prepare import add_feedback


def test_priced_houses_with_feedback_become_training_rows(log_db: LogDatabase) -> None:
    log = log_db.log()
    log.add([row("a"), row("b", 0), row("b", 1), row("c")])
    give_feedback(log, [("b", 1, 250_000.0), ("a", 0, 900_000.0)])
    log.record_feedback("c", 0, 300_000.0, authenticated=False)  # anonymous: never a label
    log.close()
    df = labeled_feedback(LogReader(log_db.store()))
    assert list(df.columns) == COLUMNS
    assert sorted(df[FEEDBACK_ID]) == ["a:0", "b:1"]
    # A sale above the survey's cap is censored at it, as the training data is.
    assert dict(zip(df[FEEDBACK_ID], df[TARGET_COLUMN], strict=True)) == {"b:1": 250_000.0, "a:0": 500_001.0}
    assert df.loc[0, "ocean_proximity"] == "NEAR BAY"


def test_no_log_means_an_empty_export(tmp_path: Path) -> None:
    df = labeled_feedback(LogReader(SQLiteStore(tmp_path / "missing.db", read_only=True)))
    assert not (tmp_path / "missing.db").exists()
    assert df.empty
    assert list(df.columns) == COLUMNS


def test_feedback_rows_keep_their_side_of_the_split(sample: pd.DataFrame) -> None:
    train, test = sample.iloc[:1600], sample.iloc[1600:]
    feedback = sample.head(1000).assign(**{FEEDBACK_ID: [f"req{i}:0" for i in range(1000)]})
    first_train, first_test = add_feedback(train, test, feedback.head(500), test_size=0.2)
    more_train, more_test = add_feedback(train, test, feedback, test_size=0.2)
    assert len(first_train) + len(first_test) == len(sample) + 500
    assert FEEDBACK_ID not in first_train.columns
    # The first 500 feedback rows land exactly where they did before the next 500 arrived.
    assert first_test.equals(more_test.head(len(first_test)))
    assert first_train.equals(more_train.head(len(first_train)))
    assert list(more_train.columns) == list(sample.columns)
    assert set(FEATURE_COLUMNS) < set(more_test.columns)


def test_test_size_of_the_feedback_goes_to_test(sample: pd.DataFrame) -> None:
    many = sample.sample(10_000, replace=True, random_state=0).reset_index(drop=True)
    feedback = many.assign(**{FEEDBACK_ID: [f"{i:032x}:0" for i in range(len(many))]})
    _, test = add_feedback(sample.head(0), sample.head(0), feedback, test_size=0.2)
    assert 0.19 < len(test) / len(feedback) < 0.21


def test_the_feedback_and_prepare_stages_put_labeled_houses_into_the_split(
    tmp_path: Path, sample: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, log_db: LogDatabase
) -> None:
    """The two stages' entry points, as `dvc repro` runs them, on a project of their own."""
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    (tmp_path / "data" / "raw").mkdir(parents=True)
    sample.to_csv(tmp_path / "data" / "raw" / "housing.csv", index=False)
    log = log_db.log()
    sold = sample.head(50)
    log.add([{**row(f"r{i}"), **house} for i, house in enumerate(sold[list(FEATURE_COLUMNS)].to_dict("records"))])
    give_feedback(log, [(f"r{i}", 0, price) for i, price in enumerate(sold[TARGET_COLUMN])])
    log.close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOUSING_PREDICTION_DB", str(tmp_path / "p.db"))  # the SQLite engine's file
    if log_db.url:
        monkeypatch.setenv("HOUSING_DATABASE_URL", log_db.url)
    feedback.main()
    prepare.main()
    assert len(pd.read_csv("data/feedback/labeled.csv")) == 50
    train, test = pd.read_csv("data/processed/train.csv"), pd.read_csv("data/processed/test.csv")
    assert len(train) + len(test) == len(sample) + 50
    assert list(train.columns) == list(sample.columns)
