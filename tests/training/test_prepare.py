from __future__ import annotations

import pandas as pd
import pytest

from training.config import Params
from training.prepare import income_band, split


def test_split_is_deterministic_and_complete(housing: pd.DataFrame, params: Params) -> None:
    train, test = split(housing, params.prepare)
    train2, test2 = split(housing, params.prepare)
    pd.testing.assert_frame_equal(train, train2)
    pd.testing.assert_frame_equal(test, test2)
    assert set(train.index).isdisjoint(test.index)
    assert len(train) + len(test) == len(housing)
    assert len(test) == pytest.approx(params.prepare.test_size * len(housing), abs=1)


def test_seed_changes_the_split(housing: pd.DataFrame, params: Params) -> None:
    other = params.prepare.model_copy(update={"seed": params.prepare.seed + 1})
    assert set(split(housing, params.prepare)[1].index) != set(split(housing, other)[1].index)


def test_split_is_stratified_on_income_bands(housing: pd.DataFrame, params: Params) -> None:
    train, test = split(housing, params.prepare)
    edges = params.prepare.income_bands
    overall = income_band(housing["median_income"], edges).value_counts(normalize=True).sort_index()
    for part in (train, test):
        share = income_band(part["median_income"], edges).value_counts(normalize=True).sort_index()
        pd.testing.assert_series_equal(share, overall, atol=0.002, check_names=False)


def test_income_bands_are_open_ended() -> None:
    bands = income_band(pd.Series([0.0, 1.5, 1.6, 5.9, 15.0]), [0.0, 1.5, 3.0, 4.5, 6.0])
    assert bands.tolist() == [0, 0, 1, 3, 4]
