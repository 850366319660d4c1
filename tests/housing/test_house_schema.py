"""A house's rules, defined once: the same verdicts for a house and for a column of houses, row by row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from housing.house_schema import EXAMPLE_HOUSE, House, columns_model, split_rejected

FileColumns = columns_model("FileColumns", fail_fast=False)
RequestColumns = columns_model("RequestColumns", fail_fast=True)

# Houses that break one rule each, as the API's tests send them (tests/service/bad_requests.py has the answers).
BROKEN: list[tuple[str, Any, str]] = [
    ("longitude", -130.0, "greater_than_equal"),
    ("latitude", 48.85, "less_than_equal"),
    ("latitude", "37.5", "float_type"),
    ("total_rooms", True, "float_type"),
    ("population", None, "float_type"),
    ("households", 0.0, "greater_than_equal"),
    ("median_income", float("inf"), "finite_number"),
    ("housing_median_age", 80.0, "less_than_equal"),
    ("total_bedrooms", 1000.0, "value_error"),
    ("ocean_proximity", "NEAR LAKE", "literal_error"),
    ("ocean_proximity", None, "literal_error"),
]


def _columns(houses: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    columns = {}
    for name in EXAMPLE_HOUSE:
        column = np.empty(len(houses), dtype=object)
        column[:] = [house.get(name) for house in houses]
        columns[name] = column
    return columns


@pytest.mark.parametrize(("field", "value", "rule"), BROKEN, ids=[f"{f}={v!r}" for f, v, _ in BROKEN])
def test_a_column_breaks_the_rule_a_house_breaks(field: str, value: Any, rule: str) -> None:
    broken = {**EXAMPLE_HOUSE, field: value}
    with pytest.raises(ValidationError) as as_house:
        House.model_validate(broken)
    assert [(e["loc"], e["type"]) for e in as_house.value.errors()] == [((field,), rule)]
    with pytest.raises(ValidationError) as as_columns:
        RequestColumns.model_validate({name: [EXAMPLE_HOUSE[name], v] for name, v in broken.items()})
    assert [(e["loc"], e["type"]) for e in as_columns.value.errors()] == [((field, 1), rule)]


def test_every_bad_row_of_a_file_is_named_and_the_others_kept() -> None:
    houses = [dict(EXAMPLE_HOUSE) for _ in range(3 * len(BROKEN))]
    for row, (field, value, _) in zip(range(1, len(houses), 3), BROKEN, strict=False):
        houses[row][field] = value
    houses[2]["total_bedrooms"] = None  # missing is allowed
    keep, rejected = split_rejected(_columns(houses), FileColumns)
    assert [(r.row, r.field, r.rule) for r in rejected] == [
        (row, field, rule) for row, (field, _, rule) in zip(range(1, len(houses), 3), BROKEN, strict=False)
    ]
    assert keep.sum() == len(houses) - len(BROKEN)
    assert "must not exceed total_rooms (1000 > 880)" in next(r.message for r in rejected if r.rule == "value_error")


def test_a_file_of_good_rows_is_validated_once() -> None:
    keep, rejected = split_rejected(_columns([EXAMPLE_HOUSE] * 5), FileColumns)
    assert keep.all()
    assert rejected == []


def test_columns_must_have_as_many_rows_each() -> None:
    body: dict[str, Any] = {name: [value] * 2 for name, value in EXAMPLE_HOUSE.items()} | {"households": [126.0]}
    with pytest.raises(ValidationError, match="has 1 rows where longitude has 2"):
        RequestColumns.model_validate(body)
    body.pop("total_bedrooms")
    body["households"] = [126.0, 126.0]
    assert RequestColumns.model_validate(body).total_bedrooms is None  # type: ignore[attr-defined]


def test_a_request_stops_each_column_at_its_first_bad_value() -> None:
    body = {name: [value] * 100 for name, value in EXAMPLE_HOUSE.items()} | {"latitude": [99.0] * 100}
    with pytest.raises(ValidationError) as request:
        RequestColumns.model_validate(body)
    with pytest.raises(ValidationError) as file:
        FileColumns.model_validate(body)
    assert (request.value.error_count(), file.value.error_count()) == (1, 100)
