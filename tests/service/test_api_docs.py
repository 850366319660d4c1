"""What the served document says beyond the generated one, on a stand-in document (no server, no model)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator
from starlette.applications import Starlette
from starlette.testclient import TestClient

from service.api_docs import CONTACT, DESCRIPTION_FILE, GROUPS, TITLE, Refusals, describe, group_of
from service.middleware import RequestMiddleware
from service.openapi import OpenAPIDocument
from service.service import REFUSALS, HousePricer

REFUSALS_HERE = Refusals(
    api_paths=["/predict"],
    json_paths=["/predict"],
    tokens={"/admin": "admin"},
    unavailable={"/predict": "the log is full"},
    limits={},
    unbounded=["/livez"],
    raised={"POST /admin/rollback": {409: "nothing to roll back to"}},
)


def generated() -> dict[str, Any]:
    """A document as BentoML writes it: its template's info and tags, int-keyed generic answers."""

    def body(ref: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}

    generic = {"description": "Bad Request", "content": body("InvalidArgument")}
    house = {"type": "object", "title": "House", "example": {"rooms": 3}}
    return {
        "openapi": "3.0.2",
        "info": {"title": "housing-price-service", "version": "None", "description": "BentoML's README",
                 "contact": {"name": "BentoML Team", "email": "contact@bentoml.com"}},
        "tags": [{"name": "Service APIs"}, {"name": "Infrastructure"}],
        "paths": {
            "/predict": {"post": {"tags": ["Service APIs"], "description": "Price one house.\n\nMore.",
                                  "requestBody": {"content": body("House")},
                                  "responses": {200: {"description": "ok"}, 400: generic, 404: generic, 500: generic}}},
            "/livez": {"get": {"tags": ["Infrastructure"], "responses": {"200": {"description": "ok"}}}},
            "/admin/rollback": {"post": {"tags": ["admin"], "summary": "Rollback", "parameters": [
                {"name": "authorization", "in": "header", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"House": house, "InvalidArgument": {"type": "object"}}},
    }  # fmt: skip


def test_the_template_s_info_and_tags_give_way_to_the_project_s() -> None:
    doc = describe(generated(), REFUSALS_HERE, "housing-price-mlops 0.1.0, model m v3")
    assert doc["info"] == {"title": TITLE, "version": "housing-price-mlops 0.1.0, model m v3",
                           "description": DESCRIPTION_FILE.read_text(), "contact": CONTACT}  # fmt: skip
    assert [tag["name"] for tag in doc["tags"]] == list(GROUPS)
    assert [op["tags"] for item in doc["paths"].values() for op in item.values()] == [["pricing"], ["monitoring"],
                                                                                       ["admin"]]  # fmt: skip
    assert list(OpenAPIV30SpecValidator(doc).iter_errors()) == []
    assert generated()["info"]["title"] == "housing-price-service"  # the generated document is left as it was


def test_each_operation_gets_its_own_answers_with_their_schemas() -> None:
    doc = describe(generated(), REFUSALS_HERE, "v")
    predict = doc["paths"]["/predict"]["post"]
    assert sorted(predict["responses"]) == ["200", "400", "408", "413", "415", "429", "503"]
    assert predict["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationFailure")
    assert predict["responses"]["503"]["description"] == "the log is full"
    assert "InvalidArgument" not in doc["components"]["schemas"]
    assert {"Error", "ValidationFailure", "FieldError", "HTTPError"} <= set(doc["components"]["schemas"])
    assert predict["summary"] == "Price one house"
    assert predict["requestBody"]["content"]["application/json"]["example"] == {"rooms": 3}
    assert sorted(doc["paths"]["/livez"]["get"]["responses"]) == ["200"]  # probes are never refused
    rollback = doc["paths"]["/admin/rollback"]["post"]
    assert rollback["security"] == [{"admin": []}]
    assert "parameters" not in rollback  # OpenAPI ignores an Authorization header parameter: security sends it
    assert rollback["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/HTTPError")
    assert rollback["responses"]["409"]["description"] == "nothing to roll back to"
    assert doc["components"]["securitySchemes"]["admin"]["scheme"] == "bearer"


def test_a_path_no_group_claims_is_an_error() -> None:
    assert group_of("/admin/retrain/alert") == "admin"
    with pytest.raises(KeyError):
        group_of("/somewhere")


def test_the_documented_refusals_are_the_middleware_s() -> None:
    """REFUSALS names the paths the middleware guards, limits, bounds and may find unavailable: the same ones."""
    ((_, options),) = [(m, o) for m, o in cast(Any, HousePricer).middlewares if m is RequestMiddleware]
    assert set(options["unavailable"]) == set(REFUSALS.unavailable)
    assert set(options["limits"]) == set(REFUSALS.limits)
    assert set(options["json_paths"]) == set(REFUSALS.json_paths)
    assert all(REFUSALS.token_scheme(path) == "feedback" for path in options["guards"])


def test_the_document_is_rebuilt_when_the_served_model_changes() -> None:
    model, builds = ["v1"], []

    def build() -> dict[str, Any]:
        builds.append(model[0])
        return {"version": model[0]}

    with TestClient(OpenAPIDocument(Starlette(), build, key=lambda: model[0])) as client:  # type: ignore[arg-type]
        assert client.get("/docs.json").json() == client.get("/docs.json").json() == {"version": "v1"}
        model[0] = "v2"
        assert client.get("/docs.json").json() == {"version": "v2"}
    assert builds == ["v1", "v2"]
