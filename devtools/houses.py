"""Houses as the service's request bodies: from a data frame, or drawn from the pipeline's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from housing.columns import FEATURE_COLUMNS, TARGET_COLUMN


def request_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One JSON-ready house per row; a missing value (NaN total_bedrooms) becomes null."""
    return [{str(k): (None if v != v else v) for k, v in row.items()} for row in df.to_dict("records")]


def houses_from(test_csv: Path, n: int) -> list[dict[str, Any]]:
    """``n`` houses of ``test_csv`` without their prices, drawn with a fixed seed (with replacement past its size)."""
    df = pd.read_csv(test_csv).drop(columns=TARGET_COLUMN)
    return request_records(df.sample(n, replace=n > len(df), random_state=0))


def as_columns(houses: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The houses as ``POST /predict_columns`` takes them: one list per field, null where a house lacks it."""
    return {name: [house.get(name) for house in houses] for name in FEATURE_COLUMNS}
