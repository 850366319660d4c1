"""The pandera schema of the raw CSV, built from the bounds in :mod:`housing.columns`.

The prediction service's request models use the same bounds, so the training
data and a served request are held to one definition of a valid block group.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from housing.columns import (
    CATEGORICAL_COLUMN,
    NUMERIC_BOUNDS,
    OCEAN_PROXIMITY_CATEGORIES,
    TARGET_BOUNDS,
    TARGET_COLUMN,
    Bounds,
)


def raw_schema(
    max_missing_fraction: dict[str, float],
    max_duplicate_fraction: float,
    min_rows: int,
) -> pa.DataFrameSchema:
    """Schema of the raw CSV: columns, dtypes, ranges, categories and data budgets.

    Checks that judge a whole column or table are named after the rows they
    count in :func:`offending_rows`, so a failure report can say how many rows
    break them.
    """
    columns = {
        name: _numeric_column(name, bounds, max_missing_fraction.get(name, 0.0))
        for name, bounds in {**NUMERIC_BOUNDS, TARGET_COLUMN: TARGET_BOUNDS}.items()
    }
    columns[CATEGORICAL_COLUMN] = pa.Column(str, pa.Check.isin(OCEAN_PROXIMITY_CATEGORIES), nullable=False, coerce=True)
    checks = [
        pa.Check(lambda df: len(df) >= min_rows, name=MIN_ROWS, error=f"{MIN_ROWS} >= {min_rows}"),
        pa.Check(
            lambda df: not len(df) or df.duplicated().mean() <= max_duplicate_fraction,
            name=DUPLICATES,
            error=f"{DUPLICATES} <= {max_duplicate_fraction}",
        ),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=True, name=SCHEMA_NAME)


SCHEMA_NAME = "housing_raw"
MIN_ROWS = "min_rows"
DUPLICATES = "duplicate_fraction"
MISSING = "missing_fraction"


def offending_rows(df: pd.DataFrame, check: str, column: str | None) -> int:
    """How many rows break a whole-column or whole-table check."""
    if check.startswith(MISSING) and column in df:
        return int(df[column].isna().sum())
    if check.startswith(DUPLICATES):
        return int(df.duplicated().sum())
    if check.startswith(MIN_ROWS):
        return len(df)
    return 0


def _numeric_column(name: str, bounds: Bounds, max_missing: float) -> pa.Column:
    # The range is checked on the values that parse as numbers, so that one bad
    # cell is reported once (by the dtype coercion) and the range check still
    # sees every other row.
    checks = [
        pa.Check(
            lambda s: _as_number(s).between(bounds.low, bounds.high) | _as_number(s).isna(),
            name=f"in_range({bounds.low:g}, {bounds.high:g})",
        )
    ]
    if bounds.nullable:
        checks.append(
            pa.Check(
                lambda s: not len(s) or s.isna().mean() <= max_missing,
                ignore_na=False,
                name=MISSING,
                error=f"{MISSING} <= {max_missing}",
            )
        )
    return pa.Column(float, checks, nullable=bounds.nullable, coerce=True, name=name)


def _as_number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")
