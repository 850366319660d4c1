"""Invalid requests and what the service must answer: status, the field it names, the rule it cites.

Shared by the in-process tests and the tests against a real `bentoml serve`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.api_models import EXAMPLE_HOUSE


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    body: bytes
    status: int
    field: str  # must appear in the error's loc (or message)
    rule: str  # must appear in the error's type or message

    @property
    def id(self) -> str:
        return self.name


def house(**changes: Any) -> dict[str, Any]:
    out = {**EXAMPLE_HOUSE, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def columns(rows: int = 3, **changes: Any) -> dict[str, Any]:
    """``rows`` copies of the example house as columns (/predict_columns), with whole columns changed or dropped."""
    out = {name: [value] * rows for name, value in EXAMPLE_HOUSE.items()} | changes
    return {k: v for k, v in out.items() if v is not _DROP}


BAD_REQUESTS = [
    BadRequest("missing field", "/predict", _json(house(median_income=_DROP)), 400, "median_income", "missing"),
    BadRequest("unknown field", "/predict", _json(house(owner="me")), 400, "owner", "extra_forbidden"),
    BadRequest("text for a number", "/predict", _json(house(latitude="37.5")), 400, "latitude", "float_type"),
    BadRequest("boolean for a number", "/predict", _json(house(total_rooms=True)), 400, "total_rooms", "float_type"),
    BadRequest("null for a required number", "/predict", _json(house(population=None)), 400, "population", "float_type"),
    BadRequest("NaN", "/predict", b'{"longitude": NaN}', 400, "longitude", "finite_number"),
    BadRequest("infinity", "/predict", _json(house()).replace(b"-122.23", b"-Infinity"), 400, "longitude", "finite"),
    BadRequest("latitude outside California", "/predict", _json(house(latitude=48.85)), 400, "latitude", "less_than_equal"),
    BadRequest("longitude outside California", "/predict", _json(house(longitude=-130.0)), 400, "longitude", "greater_than_equal"),
    BadRequest("negative population", "/predict", _json(house(population=-5.0)), 400, "population", "greater_than_equal"),
    BadRequest("negative rooms", "/predict", _json(house(total_rooms=-1.0)), 400, "total_rooms", "greater_than_equal"),
    BadRequest("zero households", "/predict", _json(house(households=0.0)), 400, "households", "greater_than"),
    BadRequest("income of zero", "/predict", _json(house(median_income=0.0)), 400, "median_income", "greater_than"),
    BadRequest("implausible income", "/predict", _json(house(median_income=250.0)), 400, "median_income", "less_than_equal"),
    BadRequest("more bedrooms than rooms", "/predict", _json(house(total_bedrooms=1000.0)), 400, "total_bedrooms", "must not exceed total_rooms"),
    BadRequest("unknown category", "/predict", _json(house(ocean_proximity="NEAR LAKE")), 400, "ocean_proximity", "literal_error"),
    BadRequest("age above the census cap", "/predict", _json(house(housing_median_age=80.0)), 400, "housing_median_age", "less_than_equal"),
    BadRequest("malformed JSON", "/predict", b'{"longitude": -122.2,', 400, "", "json_invalid"),
    BadRequest("empty body", "/predict", b"", 400, "longitude", "missing"),
    BadRequest("array for a house", "/predict", _json([house()]), 400, "", "model_type"),
    BadRequest("string body", "/predict", _json("house"), 400, "", "model_type"),
    BadRequest("batch: bad record names its index", "/predict_batch", _json([house(), house(), house(latitude=10.0)]), 400, "2", "greater_than_equal"),
    BadRequest("batch: unknown field names its index", "/predict_batch", _json([house(), house(owner="me")]), 400, "owner", "extra_forbidden"),
    BadRequest("batch: more bedrooms than rooms", "/predict_batch", _json([house(), house(total_bedrooms=1000.0)]), 400, "total_bedrooms", "must not exceed total_rooms"),
    BadRequest("batch: unknown fields in one house, counted", "/predict_batch", _json([house(), house(**{f"k{i}": 1 for i in range(2_000)})]), 400, "2000 unknown fields", "extra_forbidden"),
    BadRequest("batch: object instead of list", "/predict_batch", _json(house()), 400, "", "list_type"),
    BadRequest("batch: null record", "/predict_batch", _json([house(), None]), 400, "1", "model_type"),
    BadRequest("invocations: both formats", "/invocations", _json({"dataframe_records": [house()], "dataframe_split": {"columns": [], "data": []}}), 400, "", "exactly one"),
    BadRequest("invocations: neither format", "/invocations", _json({}), 400, "", "exactly one"),
    BadRequest("invocations: ragged split row", "/invocations", _json({"dataframe_split": {"columns": list(EXAMPLE_HOUSE), "data": [[1.0, 2.0]]}}), 400, "", "data[0]"),
    BadRequest("invocations: bad record", "/invocations", _json({"dataframe_records": [house(households=-1.0)]}), 400, "households", "greater_than"),
    BadRequest("invocations: coverage of 1", "/invocations", _json({"dataframe_records": [house()], "params": {"intervals": True, "coverage": 1.0}}), 400, "coverage", "less_than"),
    BadRequest("invocations: intervals not a boolean", "/invocations", _json({"dataframe_records": [house()], "params": {"intervals": "yes"}}), 400, "intervals", "bool_type"),
    BadRequest("invocations: unknown param", "/invocations", _json({"dataframe_records": [house()], "params": {"alpha": 0.1}}), 400, "alpha", "extra_forbidden"),
    BadRequest("feedback: negative price", "/feedback", _json({"request_id": "x", "actual_price_usd": -1.0}), 400, "actual_price_usd", "greater_than_equal"),
    BadRequest("feedback: missing request id", "/feedback", _json({"actual_price_usd": 100000.0}), 400, "request_id", "missing"),
    BadRequest("feedback: unknown request id", "/feedback", _json({"request_id": "never-issued", "actual_price_usd": 100000.0}), 404, "", "request_id"),
    BadRequest("feedback: above the census cap", "/feedback", _json({"request_id": "x", "actual_price_usd": 10_000_000.0}), 400, "actual_price_usd", "less_than_equal"),
    BadRequest("feedback: index past any batch", "/feedback", _json({"request_id": "x", "index": 10**24, "actual_price_usd": 1e5}), 400, "index", "less_than_equal"),
    BadRequest("batch: empty", "/predict_batch", b"[]", 400, "", "too_short"),
    BadRequest("batch: deeply nested", "/predict_batch", b"[" * 100_000 + b"]" * 100_000, 400, "", "recursion limit"),
    BadRequest("batch: not UTF-8", "/predict_batch", b"[\xff\xfe]", 400, "", "json_invalid"),
    BadRequest("batch: stops at the first bad house", "/predict_batch", _json([1] * 1_000), 400, "999 more houses", "model_type"),
    BadRequest("batch: more values than a legal batch", "/predict_batch", _json([1] * 100_000), 413, "request body", "JSON values"),
    BadRequest("unknown fields, counted", "/predict", _json(house(**{f"k{i}": 1 for i in range(40)})), 400, "40 unknown fields", "extra_forbidden"),
    BadRequest("a flood of unknown fields", "/predict", _json({f"k{i}": 1 for i in range(20_000)}), 413, "request body", "JSON values"),
    BadRequest("invocations: empty split", "/invocations", _json({"dataframe_split": {"columns": [], "data": [[]] * 300}}), 400, "dataframe_records", "missing"),
    BadRequest("invocations: more rows than a batch", "/invocations", _json({"dataframe_split": {"columns": [], "data": [[]] * 3000}}), 413, "dataframe_split.data", "at most 500 houses"),
    BadRequest("not JSON", "/predict", b"longitude=1", 400, "", "json_invalid"),
    BadRequest("columns: bad value names its field and row", "/predict_columns", _json(columns(latitude=[37.88, 37.88, 10.0])), 400, '["latitude", 2]', "greater_than_equal"),
    BadRequest("columns: text for a number", "/predict_columns", _json(columns(total_rooms=[880.0, "880", 880.0])), 400, '["total_rooms", 1]', "float_type"),
    BadRequest("columns: null for a required number", "/predict_columns", _json(columns(population=[None, 322.0, 322.0])), 400, '["population", 0]', "float_type"),
    BadRequest("columns: more bedrooms than rooms", "/predict_columns", _json(columns(total_bedrooms=[129.0, 1000.0, None])), 400, '["total_bedrooms", 1]', "must not exceed total_rooms"),
    BadRequest("columns: unknown category", "/predict_columns", _json(columns(ocean_proximity=["NEAR BAY", "NEAR BAY", "NEAR LAKE"])), 400, '["ocean_proximity", 2]', "literal_error"),
    BadRequest("columns: missing column", "/predict_columns", _json(columns(median_income=_DROP)), 400, "median_income", "missing"),
    BadRequest("columns: unknown column", "/predict_columns", _json(columns(owner=["me"] * 3)), 400, "owner", "extra_forbidden"),
    BadRequest("columns: columns of different lengths", "/predict_columns", _json(columns(households=[126.0])), 400, "households", "column_length"),
    BadRequest("columns: a value where a column goes", "/predict_columns", _json(columns(households=126.0)), 400, "households", "list_type"),
    BadRequest("columns: empty columns", "/predict_columns", _json(columns(rows=0)), 400, "longitude", "too_short"),
    BadRequest("columns: houses as rows", "/predict_columns", _json([house()]), 400, "", "model_type"),
    BadRequest("columns: more rows than a batch", "/predict_columns", _json(columns(rows=501)), 413, "columns", "at most 500 houses"),
    BadRequest("explain: bad field", "/explain", _json(house(latitude=48.85)), 400, "latitude", "less_than_equal"),
    BadRequest("explain: unknown field", "/explain", _json(house(owner="me")), 400, "owner", "extra_forbidden"),
    BadRequest("explain: bad house in a list", "/explain", _json([house(), house(households=0.0)]), 400, "households", "greater_than_equal"),
    BadRequest("explain: empty list", "/explain", b"[]", 400, "houses", "too_short"),
    BadRequest("explain: string body", "/explain", _json("house"), 400, "", "model_type"),
    BadRequest("explain: more houses than its limit", "/explain", _json([house()] * 201), 413, "houses", "at most 200 houses"),
]  # fmt: skip


def error_text(payload: Any) -> str:
    """Everything an error body says, flattened, to look for the field and the rule."""
    return json.dumps(payload)
