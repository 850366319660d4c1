"""What a valid house is, defined once: the rules the API checks and the ones bulk scoring rejects rows by.

A :class:`House` is one raw block-group record with the bounds declared in :mod:`housing.columns`: strict types
(no numbers in strings, no booleans), finite values, California's bounding box, non-negative counts, at least
one household, no more bedrooms than rooms, a known ``ocean_proximity``. Unknown fields are refused, named once
the house's own fields are valid. :func:`columns_model` declares the same rules over columns (one list per
field), for houses that arrive as columns (``POST /predict_columns``) or as a file (``housing score``): a
failure names the field and the row. The service's request models (service.api_models) and the operator's
bulk scoring (operations.bulk_score) both build on these, so a house one accepts the other accepts too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from housing.columns import FEATURE_COLUMNS, NUMERIC_BOUNDS, NUMERIC_COLUMNS, OCEAN_PROXIMITY_CATEGORIES

OceanProximity = Literal["<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN"]
assert set(get_args(OceanProximity)) == set(OCEAN_PROXIMITY_CATEGORIES)  # noqa: S101 - one list, checked at import  # nosec B101

DESCRIPTIONS: dict[str, str] = {
    "longitude": "Degrees east; inside California's bounding box.",
    "latitude": "Degrees north; inside California's bounding box.",
    "housing_median_age": "Median age of the houses, years (census cap 52).",
    "total_rooms": "Rooms in the block group.",
    "total_bedrooms": "Bedrooms; optional, imputed when missing.",
    "population": "People living in the block group.",
    "households": "Households; at least one.",
    "median_income": "Median income, tens of thousands of USD (census range).",
    "ocean_proximity": "Location relative to the ocean.",
}


def value_rules(name: str) -> dict[str, Any]:
    """The rules of one value of numeric column ``name``: within ``NUMERIC_BOUNDS[name]``, strict and finite."""
    bounds = NUMERIC_BOUNDS[name]
    return {"ge": bounds.low, "le": bounds.high, "strict": True, "allow_inf_nan": False}


def bounded(name: str, description: str, *, default: Any = ...) -> Any:
    """A strict, finite float field within ``NUMERIC_BOUNDS[name]``."""
    return Field(default, description=description, **value_rules(name))


EXAMPLE_HOUSE: dict[str, Any] = {
    "longitude": -122.23,
    "latitude": 37.88,
    "housing_median_age": 41.0,
    "total_rooms": 880.0,
    "total_bedrooms": 129.0,
    "population": 322.0,
    "households": 126.0,
    "median_income": 8.3252,
    "ocean_proximity": "NEAR BAY",
}


MAX_UNKNOWN_FIELDS = 5
# The fields of a House, as a set to check a house's keys against (the same names as FEATURE_COLUMNS).
HOUSE_FIELDS = frozenset(FEATURE_COLUMNS)


class House(BaseModel):
    """One census block group, as raw features."""

    # Unknown fields are kept (extra="allow") and refused by _checked once the fields are valid. Refusing
    # them in a hook before the fields (which a flood of them needs: one error, not one each) made pydantic
    # copy every house of a batch into a Python dict first: a third of validating 10,000 houses. The
    # documented schema still allows no other field.
    model_config = ConfigDict(
        extra="allow", frozen=True, json_schema_extra={"example": EXAMPLE_HOUSE, "additionalProperties": False}
    )

    longitude: float = bounded("longitude", DESCRIPTIONS["longitude"])
    latitude: float = bounded("latitude", DESCRIPTIONS["latitude"])
    housing_median_age: float = bounded("housing_median_age", DESCRIPTIONS["housing_median_age"])
    total_rooms: float = bounded("total_rooms", DESCRIPTIONS["total_rooms"])
    total_bedrooms: float | None = bounded("total_bedrooms", DESCRIPTIONS["total_bedrooms"], default=None)
    population: float = bounded("population", DESCRIPTIONS["population"])
    households: float = bounded("households", DESCRIPTIONS["households"])
    median_income: float = bounded("median_income", DESCRIPTIONS["median_income"])
    ocean_proximity: OceanProximity = Field(description=DESCRIPTIONS["ocean_proximity"])

    @model_validator(mode="after")
    def _checked(self) -> House:
        """No unknown field, and no more bedrooms than rooms; errors located as the fields' own."""
        unknown, bedrooms = self.__pydantic_extra__, self.total_bedrooms
        if not unknown and (bedrooms is None or bedrooms <= self.total_rooms):
            return self
        errors = [*_unknown_field_errors(unknown or {}), *bedroom_errors([bedrooms], [self.total_rooms], ())]
        # Raised inside a validator, a ValidationError's errors join the others under this house's location.
        raise ValidationError.from_exception_data(type(self).__name__, errors)


def _unknown_field_errors(unknown: dict[str, Any]) -> list[InitErrorDetails]:
    """One error per unknown field, as ``extra="forbid"`` gives, or one for them all past ``MAX_UNKNOWN_FIELDS``."""
    if len(unknown) <= MAX_UNKNOWN_FIELDS:
        return [{"type": "extra_forbidden", "loc": (name,), "input": value} for name, value in unknown.items()]
    names = ", ".join(islice(unknown, MAX_UNKNOWN_FIELDS))
    counts = {"count": len(unknown), "names": names, "more": len(unknown) - MAX_UNKNOWN_FIELDS}
    return [{"type": PydanticCustomError("extra_forbidden", "{count} unknown fields: {names} and {more} more", counts),
             "loc": (), "input": None}]  # fmt: skip


def bedroom_errors(
    bedrooms: Sequence[float | None], rooms: Sequence[float], loc: tuple[str, ...] = ("total_bedrooms",)
) -> list[InitErrorDetails]:
    """One error per row with more bedrooms than rooms, located at ``total_bedrooms`` (a house's) or at
    ``(*loc, row)`` (a column's: ``loc`` is then the column's own location); a missing count breaks no rule."""
    given = np.array([np.nan if value is None else value for value in bedrooms], dtype=float)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(given > np.asarray(rooms, dtype=float))
    return [
        {"type": "value_error", "loc": (*loc, int(row)) if loc else ("total_bedrooms",), "input": float(given[row]),
         "ctx": {"error": ValueError(f"must not exceed total_rooms ({given[row]:g} > {rooms[row]:g})")}}
        for row in rows.tolist()
    ]  # fmt: skip


assert House.model_fields.keys() == HOUSE_FIELDS  # noqa: S101 - one list, checked at import  # nosec B101


class _Columns(BaseModel):
    """Houses as columns: the rows' count is the same in every column, and no row has more bedrooms than rooms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _rows_agree(self) -> _Columns:
        values: dict[str, list[Any] | None] = {name: getattr(self, name) for name in FEATURE_COLUMNS}
        rows = len(values[FEATURE_COLUMNS[0]] or [])
        uneven: list[InitErrorDetails] = [
            {"type": PydanticCustomError("column_length", "has {got} rows where longitude has {rows}",
                                         {"got": len(column), "rows": rows}), "loc": (name,), "input": len(column)}
            for name, column in values.items()
            if column is not None and len(column) != rows
        ]  # fmt: skip
        bedrooms, rooms = values["total_bedrooms"], values["total_rooms"]
        errors = uneven or (bedroom_errors(bedrooms, rooms or []) if bedrooms is not None else [])
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def columns_model(name: str, *, fail_fast: bool) -> type[BaseModel]:
    """A model of houses as columns (``{"longitude": [...], ...}``, ``total_bedrooms`` optional), each value held
    to :class:`House`'s rules; an error is located at ``(field, row)``.

    ``fail_fast`` stops each column at its first bad value (a request: a body of bad values costs no more than
    a valid one); without it every bad value is named (a file: each bad row is rejected on its own).
    """

    # Unknown columns: refused by extra="forbid" (a file's other columns are never validated: they pass through).
    def column(field: str, item: Any, default: Any = ...) -> Any:
        rules = Field(min_length=1, fail_fast=fail_fast, description=f"One per house: {DESCRIPTIONS[field]}")
        return (Annotated[list[item], rules], default)

    fields: dict[str, Any] = {
        field: column(field, Annotated[float, Field(**value_rules(field))])
        for field in NUMERIC_COLUMNS
        if field != "total_bedrooms"
    }
    bedrooms = Annotated[float | None, Field(**value_rules("total_bedrooms"))]
    fields["total_bedrooms"] = column("total_bedrooms", bedrooms, None)
    fields["ocean_proximity"] = column("ocean_proximity", OceanProximity)
    return create_model(name, __base__=_Columns, **fields)


@dataclass(frozen=True)
class Rejected:
    """A row that broke a rule: its position (0-based, in the columns given), the field, the rule and the words."""

    row: int
    field: str
    rule: str
    message: str


def split_rejected(columns: Mapping[str, np.ndarray], model: type[BaseModel]) -> tuple[np.ndarray, list[Rejected]]:
    """Which rows of ``columns`` (the feature columns as object arrays of shape (n_rows,), missing values as None)
    ``model`` (a :func:`columns_model` without ``fail_fast``) accepts: a boolean mask, shape (n_rows,), and the
    first error of each rejected row.

    The bedroom rule is checked once every field of the rows is valid (as for a house), so rows with valid
    fields are validated again after the others are set aside: at most three passes.
    """
    rows = len(next(iter(columns.values())))
    keep = np.ones(rows, dtype=bool)
    rejected: dict[int, Rejected] = {}
    while keep.any():
        kept = np.flatnonzero(keep)
        try:
            model.model_validate({name: values[kept].tolist() for name, values in columns.items()})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                if len(error["loc"]) < 2:
                    raise ValueError(f"{error['loc']}: {error['msg']}") from None
                field, position = error["loc"][0], error["loc"][1]
                row = int(kept[int(position)])
                rejected.setdefault(row, Rejected(row, str(field), error["type"], error["msg"]))
                keep[row] = False
            continue
        break
    return keep, [rejected[row] for row in sorted(rejected)]
