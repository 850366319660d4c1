"""Request and response models of the prediction service.

A :class:`House` is one raw block-group record, validated at the edge with the
bounds declared once in :mod:`housing.columns`: strict types (no numbers in
strings, no booleans), finite values, California's bounding box, non-negative
counts, at least one household, no more bedrooms than rooms, a known
``ocean_proximity``. Unknown fields are refused, named once the house's own fields
are valid. A failure names the field (and, in a batch, the record's index) and the
rule. Lists stop at their first bad house, so a large body of bad values costs no
more than a valid one. The APIs' models are ``bentoml.IODescriptor``s, which BentoML uses as they are:
errors and the OpenAPI document name them (``House``), not a class it derives (``HouseIODescriptor``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

from bentoml import IODescriptor
from bentoml.exceptions import BentoMLException
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, from_json

from housing.columns import FEATURE_COLUMNS, TARGET_BOUNDS
from housing.explain import Explanation
from housing.house_schema import EXAMPLE_HOUSE, columns_model
from housing.house_schema import House as CoreHouse
from housing.settings import settings


class PayloadTooLarge(BentoMLException):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def check_batch_size(houses: int, field: str, limit: int | None = None) -> None:
    """413 for more houses than a request may hold (``limit``, by default ``HOUSING_MAX_BATCH_SIZE``).

    Called before validation where the count is known early: validating houses
    only to refuse them would hold the worker longer than the largest legal batch.
    """
    limit = limit or settings().max_batch_size
    if houses > limit:
        raise PayloadTooLarge(f"{field}: at most {limit} houses per request, got {houses}")


class House(CoreHouse, IODescriptor):
    """One census block group, as raw features: housing.house_schema's rules, as the body BentoML parses."""


# At least one house; validation of a list stops at its first bad house.
Houses = Annotated[list[House], Field(min_length=1, fail_fast=True)]


# No batch holds more houses than this (the service's own limit is lower: HOUSING_MAX_BATCH_SIZE).
MAX_INDEX = 1_000_000


class HouseBatch(IODescriptor, RootModel[Houses]):
    """A JSON array of houses (up to HOUSING_MAX_BATCH_SIZE)."""

    # A model rather than ``list[House]``: BentoML parses a bare list with Python's ``json`` (a deeply nested or
    # non-UTF-8 body raised a 500), a model with pydantic's own parser, which answers such bodies with a 400.
    model_config = ConfigDict(json_schema_extra={"example": [EXAMPLE_HOUSE, {**EXAMPLE_HOUSE, "median_income": 3.2}]})

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> HouseBatch:
        """Validate, and when a house fails, say how many houses after it went unchecked."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _with_unchecked_houses(exc, json_data) from None


def _with_unchecked_houses(exc: ValidationError, json_data: str | bytes | bytearray) -> ValidationError:
    """``exc`` and one more error counting the houses after the first bad one (only paid on this path)."""
    errors = exc.errors(include_url=False)
    first = errors[0]["loc"][0] if errors and errors[0]["loc"] else None
    try:
        houses = from_json(json_data)
    except ValueError:
        return exc
    if not isinstance(first, int) or not isinstance(houses, list) or len(houses) <= first + 1:
        return exc
    unchecked = PydanticCustomError(
        "houses_not_checked",
        "validation stops at the first invalid house: {more} more houses after it were not checked",
        {"more": len(houses) - first - 1},
    )
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError(error["type"], error["msg"].replace("{", "{{").replace("}", "}}")),
         "loc": error["loc"], "input": error["input"]}
        for error in errors
    ]  # fmt: skip
    return ValidationError.from_exception_data(exc.title, [*details, {"type": unchecked, "loc": (), "input": None}])


def columns_of(houses: list[House]) -> dict[str, list[Any]]:
    """The houses as columns (name -> values), the form the model's feature code reads fastest."""
    return {name: [getattr(house, name) for house in houses] for name in FEATURE_COLUMNS}


# House's rules over columns (housing.house_schema), each column stopping at its first bad value.
_HouseColumnFields: Any = columns_model("HouseColumnFields", fail_fast=True)


class HouseColumns(_HouseColumnFields, IODescriptor):
    """Houses as columns: one JSON list per field of a house, the same length each (``total_bedrooms`` may be
    left out, or hold nulls). Every value is held to a house's rules; an error names the field and the row."""

    model_config = ConfigDict(json_schema_extra={"example": {name: [value] for name, value in EXAMPLE_HOUSE.items()}})

    @model_validator(mode="before")
    @classmethod
    def _not_too_many(cls, data: Any) -> Any:
        """413 before any value is validated, for a column longer than a request may hold."""
        if isinstance(data, dict):
            check_batch_size(max((len(v) for v in data.values() if isinstance(v, list)), default=0), "columns")
        return data

    def columns(self) -> dict[str, list[Any]]:
        """The houses as :func:`columns_of` gives them (a missing ``total_bedrooms`` as nulls)."""
        rows = len(self.longitude)
        return {name: getattr(self, name) or [None] * rows for name in FEATURE_COLUMNS}


class ModelIdentity(BaseModel):
    model_name: str = Field(description="Registered MLflow model name.")
    model_version: str = Field(description="Registered MLflow model version.")


INTERVAL_DESCRIPTION = (
    "Conformal interval: the sale price falls between the bounds for `interval_coverage` of houses like the "
    "calibration houses; wider where prices are harder to predict. Null for a model registered without intervals."
)


class Prediction(ModelIdentity, IODescriptor):
    price_usd: float = Field(description="Predicted median house value, USD.")
    lower_usd: float | None = Field(default=None, description=f"Lower bound, USD. {INTERVAL_DESCRIPTION}")
    upper_usd: float | None = Field(default=None, description="Upper bound, USD.")
    interval_coverage: float | None = Field(default=None, description="Nominal coverage of the bounds (0.9: 90%).")
    request_id: str = Field(description="Echoes X-Request-ID, or a generated id; quote it in /feedback.")


class BatchPrediction(ModelIdentity, IODescriptor):
    prices_usd: list[float] = Field(description="One predicted price per house, in request order.")
    lower_usd: list[float] | None = Field(default=None, description=f"Lower bounds, USD. {INTERVAL_DESCRIPTION}")
    upper_usd: list[float] | None = Field(default=None, description="Upper bounds, USD.")
    interval_coverage: float | None = Field(default=None, description="Nominal coverage of the bounds (0.9: 90%).")
    count: int
    request_id: str


class ColumnPrediction(ModelIdentity, IODescriptor):
    price_usd: list[float] = Field(description="One predicted price per row, USD, in the columns' order.")
    lower_usd: list[float] | None = Field(default=None, description=f"Lower bounds, USD. {INTERVAL_DESCRIPTION}")
    upper_usd: list[float] | None = Field(default=None, description="Upper bounds, USD.")
    interval_coverage: float | None = Field(default=None, description="Nominal coverage of the bounds (0.9: 90%).")
    count: int
    request_id: str


def _house_or_houses(body: Any) -> str:
    return "houses" if isinstance(body, list) else "house"


HouseOrHouses = Annotated[Annotated[House, Tag("house")] | Annotated[Houses, Tag("houses")],
                          Discriminator(_house_or_houses)]  # fmt: skip


class ExplainRequest(IODescriptor, RootModel[HouseOrHouses]):
    """One house, or a JSON array of houses (up to HOUSING_MAX_EXPLAIN_HOUSES).

    A JSON array is validated as a list and anything else as a house, so an error
    names the field (``house.latitude``, ``houses.2.latitude``) and not every form it failed.
    """

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_HOUSE})

    def houses(self) -> list[House]:
        return self.root if isinstance(self.root, list) else [self.root]


class HouseExplanation(BaseModel):
    price_usd: float = Field(description="The price /predict gives this house, USD.")
    base_usd: float = Field(description="The model's base value: its average price over the training data, USD.")
    contributions_usd: dict[str, float] = Field(
        description="Each raw input's contribution to the price, USD: base_usd plus their sum is price_usd "
        "(within 1 USD). Engineered features count for the inputs they are computed from, in equal shares."
    )


class Explanations(ModelIdentity, IODescriptor):
    explanations: list[HouseExplanation] = Field(description="One per house, in request order.")
    count: int
    request_id: str


def house_explanations(explanation: Explanation) -> list[HouseExplanation]:
    """The response's form of ``explanation`` (housing.explain): one object per house."""
    inputs = explanation.inputs
    return [
        HouseExplanation(price_usd=price, base_usd=base, contributions_usd=dict(zip(inputs, values, strict=True)))
        for price, base, values in zip(
            explanation.price_usd.tolist(),
            explanation.base_usd.tolist(),
            explanation.contributions_usd.tolist(),
            strict=True,
        )
    ]


class DataFrameSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


class InvocationParams(BaseModel):
    """The registered model's inference parameters (housing.pyfunc_flavor), as MLflow's protocol passes them."""

    model_config = ConfigDict(extra="forbid")
    intervals: bool = Field(default=False, strict=True, description="Answer each price with its bounds.")
    coverage: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Nominal coverage of the bounds (default: the model's).",
    )


class Invocation(IODescriptor):
    """MLflow's scoring protocol: exactly one of ``dataframe_split`` or ``dataframe_records``, and ``params``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"dataframe_split": {"columns": list(EXAMPLE_HOUSE), "data": [list(EXAMPLE_HOUSE.values())]}}
        },
    )

    dataframe_split: DataFrameSplit | None = None
    dataframe_records: Houses | None = None
    params: InvocationParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_format(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [key for key in ("dataframe_split", "dataframe_records") if data.get(key) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'dataframe_split' or 'dataframe_records'")
        split = data.get("dataframe_split")
        if isinstance(data.get("dataframe_records"), list):
            check_batch_size(len(data["dataframe_records"]), "dataframe_records")
        if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
            columns = split["columns"]
            rows = split["data"]
            check_batch_size(len(rows), "dataframe_split.data")
            for i, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != len(columns):
                    raise ValueError(
                        f"dataframe_split.data[{i}] must be a list of {len(columns)} values, one per column"
                    )
            # Validate the rows as records, so errors name the row and the field.
            records = [dict(zip(columns, row, strict=True)) for row in rows]
            return {**{k: v for k, v in data.items() if k != "dataframe_split"}, "dataframe_records": records}
        return data

    def houses(self) -> list[House]:
        return self.dataframe_records or []


class PricedRecord(BaseModel):
    price_usd: float
    lower_usd: float
    upper_usd: float


class InvocationResponse(IODescriptor):
    """MLflow's answer: a price per record, or with ``params.intervals`` a record of price and bounds."""

    predictions: list[float] | list[PricedRecord]


class Feedback(IODescriptor):
    """The actual sale price of a house the service priced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"request_id": "3f2b9c1e6a7d4e21", "actual_price_usd": 452600.0}},
    )

    request_id: str = Field(min_length=1, max_length=128, description="The request id of the prediction.")
    index: int = Field(
        default=0, ge=0, le=MAX_INDEX, description="Position of the house in a batch request (0 for /predict)."
    )
    actual_price_usd: float = Field(
        ge=TARGET_BOUNDS.low,
        le=TARGET_BOUNDS.high,
        allow_inf_nan=False,
        strict=True,
        description="Sale price, USD, within the census' range the model trains on.",
    )


class FeedbackCorrection(Feedback):
    """An admin's correction of feedback already recorded, with the reason."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"request_id": "3f2b9c1e6a7d4e21", "actual_price_usd": 452600.0, "reason": "typo in the deed"}
        },
    )

    reason: str = Field(min_length=1, max_length=500, description="Why the recorded price was wrong.")


class FeedbackCorrected(BaseModel):
    request_id: str
    index: int
    previous_price_usd: float
    actual_price_usd: float


class FeedbackReceipt(IODescriptor):
    request_id: str
    index: int
    predicted_price_usd: float
    actual_price_usd: float
    error_usd: float = Field(description="actual - predicted")


class ModelInfo(ModelIdentity):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "model_name": "housing-price-model",
                "model_version": "5",
                "run_id": "0d1c9f5e2a7b4c3d8e9f00112233aabb",
                "bento_tag": "housing-price-model:zhlz7rhlowasaax4",
                "family": "gradient_boosting",
                "data_version": "b8be97d51a2bb7ec478a83c80e4924bc",
                "test_metrics": {"rmse": 41300.0, "mae": 25519.0, "r2": 0.87},
                "cv_metrics": {"rmse": 41142.0, "rmse_std": 1336.0, "mae": 25854.0, "r2": 0.875},
                "feature_schema": {"title": "House", "type": "object", "properties": {"longitude": {"type": "number"}}},
            }
        },
    )

    run_id: str
    bento_tag: str
    family: str
    data_version: str = Field(description="DVC/MD5 hash of the raw training data.")
    test_metrics: dict[str, float]
    cv_metrics: dict[str, float]
    feature_schema: dict[str, Any] = Field(description="JSON schema of one house.")
    interval_coverage: float | None = Field(
        default=None, description="Nominal coverage of the price intervals; null for a model without them."
    )


class Health(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "status": "ok",
                "model_name": "housing-price-model",
                "model_version": "5",
                "uptime_s": 3600.0,
                "prediction_log_queue": 0,
                "prediction_log_write_failures": 0,
                "model_runtime": "lleaves",
                "model_runtime_problem": None,
                "interval_runtime": "lleaves",
                "interval_runtime_problem": None,
                "explain_runtime": "pred_contrib",
                "explain_runtime_problem": None,
            }
        },
    )

    status: Literal["ok", "degraded"]
    model_name: str
    model_version: str
    uptime_s: float
    prediction_log_queue: int
    prediction_log_write_failures: int
    model_runtime: Literal["lleaves", "lightgbm", "scikit-learn"] = Field(
        description="What computes the forest's scores: compiled code (lleaves), the LightGBM booster (while "
        "compiling, or when compiled code is missing or unusable) or the model's own predict (other families)."
    )
    model_runtime_problem: str | None = Field(description="Why compiled code is not serving, if it is not.")
    interval_runtime: Literal["lleaves", "lightgbm"] | None = Field(
        default=None, description="What computes the intervals' scale model (null: a model without intervals)."
    )
    interval_runtime_problem: str | None = Field(
        default=None, description="Why compiled code is not serving the scale model, if it is not."
    )
    explain_runtime: Literal["pred_contrib"] | None = Field(
        default=None,
        description="What computes /explain's TreeSHAP values: LightGBM's pred_contrib; null: not a forest.",
    )
    explain_runtime_problem: str | None = Field(
        default=None, description="Always null (kept for earlier clients): nothing but LightGBM explains."
    )
    model_errors: list[str] = Field(
        default_factory=list,
        description="Why a worker of this replica still serves its old model (a reload or the registry's champion "
        "that did not load); empty when none.",
    )
    prediction_log_problem: str | None = Field(
        default=None,
        description="Why this worker's prediction log is not storing rows now (its database unreachable, its disk "
        "full), and how many rows wait in memory; null while it stores them.",
    )
    prediction_log_dropped_rows: int = Field(
        default=0, description="Rows this worker could not keep since it started: its queue was full."
    )
    shadow_challenger: str | None = Field(
        default=None, description="The challenger version this worker prices in shadow (GET /shadow); null: none."
    )
    shadow_problem: str | None = Field(
        default=None,
        description="Why the challenger's last pricing failed (the champion serves on); null: it did not. "
        "A challenger that does not load is in model_errors.",
    )


class RetrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"force": False}})

    force: bool = Field(default=False, description="Retrain even if neither drift nor accuracy demand it.")


# A registered model's version as MLflow numbers them: a positive whole number.
VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"


class ShadowStart(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"version": "7", "fraction": 0.5}})

    version: str = Field(pattern=VERSION_PATTERN, description="The registered version to run in shadow.")
    fraction: float = Field(default=1.0, gt=0, le=1, description="The share of pricing requests it prices.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"to": None, "reason": "bad release"}})

    to: str | None = Field(default=None, pattern=VERSION_PATTERN, description="Version to restore (default: previous).")
    reason: str = Field(default="", max_length=500, description="Why, for the promotion history.")
