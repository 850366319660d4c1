from __future__ import annotations

import pandas as pd
import pytest

from housing.params import Params
from housing.slices import income_band
from training.prepare import split


def test_split_is_deterministic_and_complete(sample: pd.DataFrame, params: Params) -> None:
    train, test = split(sample, params.prepare)
    train2, test2 = split(sample, params.prepare)
    pd.testing.assert_frame_equal(train, train2)
    pd.testing.assert_frame_equal(test, test2)
    assert set(train.index).isdisjoint(test.index)
    assert len(train) + len(test) == len(sample)
    assert len(test) == pytest.approx(params.prepare.test_size * len(sample), abs=1)


def test_seed_changes_the_split(sample: pd.DataFrame, params: Params) -> None:
    other = params.prepare.model_copy(update={"seed": params.prepare.seed + 1})
    assert set(split(sample, params.prepare)[1].index) != set(split(sample, other)[1].index)


def test_split_is_stratified_on_income_bands(sample: pd.DataFrame, params: Params) -> None:
    train, test = split(sample, params.prepare)
    edges = params.prepare.income_bands
    overall = income_band(sample["median_income"], edges).value_counts(normalize=True).sort_index()
    for part in (train, test):
        share = income_band(part["median_income"], edges).value_counts(normalize=True).sort_index()
        pd.testing.assert_series_equal(share, overall, atol=0.002, check_names=False)
