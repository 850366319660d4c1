from __future__ import annotations

import pandas as pd

from housing.slices import band_names, income_band, slice_masks

EDGES = [0.0, 1.5, 3.0, 4.5, 6.0]


def test_income_bands_are_open_ended() -> None:
    bands = income_band(pd.Series([0.0, 1.5, 1.6, 5.9, 15.0]), EDGES)
    assert bands.tolist() == [0, 0, 1, 3, 4]
    assert band_names(EDGES) == ["0-1.5", "1.5-3", "3-4.5", "4.5-6", "6+"]


def test_masks_name_each_slice_s_rows_and_skip_empty_ones() -> None:
    X = pd.DataFrame({"median_income": [1.0, 2.0, 7.0], "ocean_proximity": ["INLAND", "NEAR BAY", "INLAND"]})
    masks = slice_masks(X, EDGES)
    assert {value: mask.tolist() for value, mask in masks["ocean_proximity"].items()} == {
        "INLAND": [True, False, True],
        "NEAR BAY": [False, True, False],
    }
    assert {value: mask.tolist() for value, mask in masks["income_band"].items()} == {
        "0-1.5": [True, False, False],
        "1.5-3": [False, True, False],
        "6+": [False, False, True],
    }
