"""The raw data both sides agree on: columns, their ranges, the categories and the target.

The training data's schema (training.raw_schema) and the service's request
models (service.api_models) are both built from these, so a house the service
accepts is one the model was trained to price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NUMERIC_COLUMNS: tuple[str, ...] = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
)
CATEGORICAL_COLUMN = "ocean_proximity"
OCEAN_PROXIMITY_CATEGORIES: tuple[str, ...] = (
    "<1H OCEAN",
    "INLAND",
    "ISLAND",
    "NEAR BAY",
    "NEAR OCEAN",
)
FEATURE_COLUMNS: tuple[str, ...] = (*NUMERIC_COLUMNS, CATEGORICAL_COLUMN)
TARGET_COLUMN = "median_house_value"


@dataclass(frozen=True)
class Bounds:
    """Inclusive range of a numeric column, and whether it may be missing."""

    low: float
    high: float
    nullable: bool = False


# California's bounding box; the survey's caps (age 52, income 15.0001 in tens of
# thousands of USD, value 500,001 USD) are the upper bounds of their columns, and its
# bottom codes (income 0.4999, value 14,999 USD) the lower bounds. A block group has at
# least one household. Closed ranges only: OpenAPI 3.0 clients cannot read open ones.
NUMERIC_BOUNDS: dict[str, Bounds] = {
    "longitude": Bounds(-124.5, -114.0),
    "latitude": Bounds(32.5, 42.1),
    "housing_median_age": Bounds(0.0, 52.0),
    "total_rooms": Bounds(0.0, 1e6),
    "total_bedrooms": Bounds(0.0, 1e6, nullable=True),
    "population": Bounds(0.0, 1e7),
    "households": Bounds(1.0, 1e6),
    "median_income": Bounds(0.4999, 15.0001),
}
TARGET_BOUNDS = Bounds(14_999.0, 500_001.0)


def column(X: Any, name: str) -> np.ndarray:
    """Column ``name`` of ``X`` (a ``pandas.DataFrame`` or a mapping of name to values), float, shape (n_samples,).

    A missing value (None) becomes NaN.
    """
    return np.asarray(X[name], dtype=np.float64).reshape(-1)


def read_columns(X: Any) -> dict[str, Any]:
    """``X``'s columns read once: each numeric one as :func:`column` gives it, the category as it is.

    The feature transformers and the interval model read the numeric columns 27 times between them; on
    these arrays :func:`column` copies nothing, where it converts a list each time. Values are unchanged.
    """
    return {**{name: column(X, name) for name in NUMERIC_COLUMNS}, CATEGORICAL_COLUMN: X[CATEGORICAL_COLUMN]}
