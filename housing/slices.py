"""The slices houses are judged by: ``ocean_proximity`` values and median-income bands.

Defined once: the prepare stage stratifies its split by the same income bands,
the evaluate stage and the model card report error and interval coverage per
slice, the log's insights report does the same on feedback, and the price
intervals are calibrated per income band (housing.conformal), in training and
for every served house.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from housing.columns import CATEGORICAL_COLUMN, OCEAN_PROXIMITY_CATEGORIES

INCOME_BAND = "income_band"


def band_index(income: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Band index of each median income (tens of thousands of USD), shape (n_houses,) of int.

    Bands are closed on the right, ``(edges[i], edges[i + 1]]``; the first also holds its lower edge and
    anything below it, the last is open-ended. One binary search per house on a NumPy array, as the
    service bands each priced house.
    """
    return np.searchsorted(np.asarray(edges[1:], dtype=float), income, side="left")


def income_band(income: pd.Series, edges: Sequence[float]) -> pd.Series:
    """:func:`band_index` of each median income, on the index of ``income``."""
    return pd.Series(band_index(income.to_numpy(dtype=float), edges), index=income.index, name=income.name)


def band_names(edges: Sequence[float]) -> list[str]:
    """A readable name per income band, e.g. ``"1.5-3"`` and ``"6+"`` (tens of thousands of USD)."""
    return [f"{low:g}-{high:g}" for low, high in pairwise(edges)] + [f"{edges[-1]:g}+"]


def slice_masks(X: pd.DataFrame, edges: Sequence[float]) -> dict[str, dict[str, np.ndarray]]:
    """Per slicing column, each value's rows of ``X`` as a boolean mask of shape (n_samples,).

    Values with no row are left out.
    """
    bands = band_index(X["median_income"].to_numpy(dtype=float), edges)
    ocean = X[CATEGORICAL_COLUMN].to_numpy()
    slices = {
        CATEGORICAL_COLUMN: {value: ocean == value for value in OCEAN_PROXIMITY_CATEGORIES},
        INCOME_BAND: {name: bands == index for index, name in enumerate(band_names(edges))},
    }
    return {column: {value: mask for value, mask in masks.items() if mask.any()} for column, masks in slices.items()}


def band_edges(names: Sequence[str]) -> list[float]:
    """The edges of the bands :func:`band_names` named, e.g. ``["0-1.5", "1.5-3", "3+"]`` -> ``[0.0, 1.5, 3.0]``."""
    return [float(name.split("-")[0].removesuffix("+")) for name in names]
