from __future__ import annotations

import numpy as np
import pandas as pd

from housing.slices import band_index, band_names, income_band, slice_masks

EDGES = [0.0, 1.5, 3.0, 4.5, 6.0]


def test_income_bands_are_open_ended() -> None:
    bands = income_band(pd.Series([0.0, 1.5, 1.6, 5.9, 15.0]), EDGES)
    assert bands.tolist() == [0, 0, 1, 3, 4]
    assert band_names(EDGES) == ["0-1.5", "1.5-3", "3-4.5", "4.5-6", "6+"]


def test_the_service_s_banding_is_the_reports_right_closed_intervals() -> None:
    """band_index (one binary search per house, as the service bands each priced house) is pandas' cut of
    (edges[i], edges[i + 1]], the first band closed at its lower edge, on every income the schema allows."""
    income = np.concatenate([np.linspace(0.0, 16.0, 3201), EDGES, np.nextafter(EDGES, np.inf)])
    cut = pd.cut(income, [*EDGES, np.inf], labels=False, include_lowest=True)
    np.testing.assert_array_equal(band_index(income, EDGES), cut)
    assert income_band(pd.Series(income, index=income * 10), EDGES).index.equals(pd.Index(income * 10))


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
