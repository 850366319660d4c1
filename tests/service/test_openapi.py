"""The OpenAPI 3.0 rewrite of pydantic's schemas, on stand-in models and a stand-in app (no server)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema.exceptions import UnknownType
from openapi_spec_validator import OpenAPIV30SpecValidator
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.openapi import HOUSE_REF, OpenAPIDocument, limit_batches, openapi_30, schema_30


class Part(BaseModel):
    name: str = Field(min_length=1, max_length=20)


class Order(BaseModel):
    """Every construct pydantic writes in JSON Schema 2020-12 words that OpenAPI 3.0 spells otherwise."""

    model_config = ConfigDict(json_schema_extra={"example": {"weight": 2.5, "kind": "box"}})

    weight: float = Field(gt=0, lt=100, examples=[2.5])
    count: int = Field(default=1, ge=1, le=10)
    kind: Literal["box"] = "box"
    note: str | None = Field(default=None, max_length=50)
    part: Part | None = None
    tags: Annotated[list[str], Field(min_length=1, max_length=3)] = ["a"]


def document(schemas: dict[str, Any]) -> dict[str, Any]:
    """A minimal OpenAPI 3.0.2 document with one operation posting ``Order``, the way BentoML writes it."""
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order", "root_input": True}}}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "t", "version": "1"},
        "paths": {"/order": {"post": {"requestBody": body, "responses": {"200": {"description": "ok"}}}}},
        "components": {"schemas": schemas},
    }


def order_schemas() -> dict[str, Any]:
    schema = Order.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs"), "Order": schema}


def errors_of(doc: dict[str, Any]) -> list[str]:
    """What openapi-spec-validator finds wrong with ``doc`` as OpenAPI 3.0."""
    try:
        return [str(error) for error in OpenAPIV30SpecValidator(doc).iter_errors()]
    except UnknownType as exc:  # a schema of {"type": "null"} stops 3.0's validator
        return [str(exc)]


def test_pydantic_schemas_are_not_openapi_30_until_rewritten() -> None:
    raw = document(order_schemas())
    assert errors_of(raw)
    assert errors_of(openapi_30(raw)) == []


def test_every_bound_and_example_survives_the_rewrite() -> None:
    order = openapi_30(document(order_schemas()))["components"]["schemas"]["Order"]
    fields = order["properties"]
    weight = {key: value for key, value in fields["weight"].items() if key != "title"}
    assert weight == {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100,
                      "exclusiveMaximum": True, "example": 2.5}  # fmt: skip
    assert (fields["count"]["minimum"], fields["count"]["maximum"]) == (1, 10)
    assert fields["kind"]["enum"] == ["box"]
    assert (fields["note"]["nullable"], fields["note"]["maxLength"]) == (True, 50)
    assert fields["part"] == {"allOf": [{"$ref": "#/components/schemas/Part"}], "nullable": True, "default": None}
    assert (fields["tags"]["minItems"], fields["tags"]["maxItems"]) == (1, 3)
    assert order["example"] == {"weight": 2.5, "kind": "box"}


def test_unknown_keys_are_kept_as_extensions() -> None:
    converted = openapi_30(document(order_schemas()))
    body = converted["paths"]["/order"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"allOf": [{"$ref": "#/components/schemas/Order"}], "x-root_input": True}


def test_a_closed_bound_stricter_than_the_open_one_wins() -> None:
    assert schema_30({"type": "number", "minimum": 5, "exclusiveMinimum": 1}) == {"type": "number", "minimum": 5}
    assert schema_30({"type": ["integer", "null"]}) == {"type": "integer", "nullable": True}


def test_lists_of_houses_get_the_batch_limit() -> None:
    batch = {"type": "array", "minItems": 1, "items": {"$ref": HOUSE_REF}}
    split = {"title": "DataFrameSplit", "properties": {"data": {"type": "array", "items": {}}}}
    columns = {"title": "HouseColumns", "properties": {"latitude": {"type": "array", "items": {}}}}
    schemas = {"DataFrameSplit": split, "HouseColumns": columns}
    doc = {"paths": {"/b": {"schema": batch}}, "components": {"schemas": schemas}}
    limited = limit_batches(doc, 7)
    assert limited["paths"]["/b"]["schema"]["maxItems"] == 7
    assert limited["components"]["schemas"]["DataFrameSplit"]["properties"]["data"]["maxItems"] == 7
    assert limited["components"]["schemas"]["HouseColumns"]["properties"]["latitude"]["maxItems"] == 7
    assert "maxItems" not in batch  # the generated document is left as it was


def test_the_document_is_served_from_the_first_build_and_other_paths_pass() -> None:
    builds = []

    def build() -> dict[str, Any]:
        builds.append(1)
        return {"openapi": "3.0.2"}

    routes = [
        Route("/docs.json", lambda _: PlainTextResponse("generated")),
        Route("/x", lambda _: PlainTextResponse("x")),
    ]
    app = Starlette(routes=routes)
    with TestClient(OpenAPIDocument(app, build)) as client:  # type: ignore[arg-type]
        assert client.get("/docs.json").json() == client.get("/docs.json").json() == {"openapi": "3.0.2"}
        assert client.head("/docs.json").status_code == 200
        assert client.get("/x").text == "x"
        assert client.post("/docs.json").status_code == 405
    assert len(builds) == 1
