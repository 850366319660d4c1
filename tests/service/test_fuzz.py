"""The served OpenAPI document on a real `bentoml serve`: valid as declared, with every bound and example;
schemathesis reads it and finds no request that gets a 5xx, admin and feedback routes included."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import annotated_types
import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from service.api_models import EXAMPLE_HOUSE, Feedback, House
from tests.service.described_api import check_described
from tests.service.server import Server, start_server
from tests.workspace import BIN, Workspace

pytestmark = pytest.mark.integration

# One token for both roles, so that one Authorization header opens the admin and the feedback routes.
TOKEN = "fuzz-token"  # noqa: S105 - a test's own token
# These start the real pipeline or move the champion; their own tests cover their bad inputs (test_admin).
NOT_FUZZED = ("POST /admin/retrain", "POST /admin/retrain/alert", "POST /admin/rollback")
MAX_BATCH = 500  # start_server's HOUSING_MAX_BATCH_SIZE
# How OpenAPI 3.0 writes each pydantic constraint: (key, value of the bound, exclusive flag or None).
BOUND_KEYS = {
    annotated_types.Ge: ("minimum", "ge", None),
    annotated_types.Gt: ("minimum", "gt", "exclusiveMinimum"),
    annotated_types.Le: ("maximum", "le", None),
    annotated_types.Lt: ("maximum", "lt", "exclusiveMaximum"),
    annotated_types.MinLen: ("minLength", "min_length", None),
    annotated_types.MaxLen: ("maxLength", "max_length", None),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> Iterator[Server]:
    env = {"HOUSING_ADMIN_TOKEN": TOKEN, "HOUSING_FEEDBACK_TOKEN": TOKEN, "HOUSING_PROJECT_DIR": str(workspace.path)}
    running = start_server(tmp_path_factory.mktemp("fuzz"), env)
    yield running
    running.stop()


def model_bounds(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """Each field's bounds as OpenAPI 3.0 keys, read from the pydantic field's own constraints."""
    bounds: dict[str, dict[str, Any]] = {}
    for name, field in model.model_fields.items():
        for constraint in field.metadata:
            if type(constraint) in BOUND_KEYS:
                key, attribute, exclusive = BOUND_KEYS[type(constraint)]
                bounds.setdefault(name, {})[key] = getattr(constraint, attribute)
                if exclusive:
                    bounds[name][exclusive] = True
    return bounds


def body_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """The request body schema of ``POST path``, its reference followed."""
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return resolve(doc, schema)


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref") or next((sub["$ref"] for sub in schema.get("allOf", []) if "$ref" in sub), None)
    return resolve(doc, doc["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


def test_the_document_validates_as_declared_with_every_bound_and_example(server: Server, champion: dict) -> None:
    doc = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    assert doc["openapi"].startswith("3.0")
    validate(doc)  # as the version the document declares
    # `bentoml serve` in the checkout describes this API as the in-process app and the bento do.
    check_described(doc, f"housing-price-mlops {metadata.version('housing-price-mlops')}", champion["version"])
    validate(httpx.get(f"{server.url}/openapi.json", timeout=30).json())  # the GET routes' own (FastAPI, 3.1)
    for path, model in (("/predict", House), ("/feedback", Feedback)):
        served = body_schema(doc, path)["properties"]
        for field, bounds in model_bounds(model).items():
            assert {key: served[field].get(key) for key in bounds} == bounds, (path, field)
    assert body_schema(doc, "/predict")["example"] == EXAMPLE_HOUSE
    assert body_schema(doc, "/feedback")["example"] == Feedback.model_config["json_schema_extra"]["example"]  # type: ignore[index]
    batch = body_schema(doc, "/predict_batch")
    records = body_schema(doc, "/invocations")["properties"]["dataframe_records"]
    rows = resolve(doc, body_schema(doc, "/invocations")["properties"]["dataframe_split"])["properties"]["data"]
    assert [(batch["minItems"], batch["maxItems"]), (records["minItems"], records["maxItems"])] == [(1, MAX_BATCH)] * 2
    assert rows["maxItems"] == MAX_BATCH
    assert "dataframe_split" in body_schema(doc, "/invocations")["example"]
    assert body_schema(doc, "/predict")["properties"]["total_bedrooms"]["nullable"] is True


def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    excluded = [arg for name in NOT_FUZZED for arg in ("--exclude-name", name)]
    result = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{server.url}/docs.json", "--url", server.url,
         "-H", f"Authorization: Bearer {TOKEN}", "--checks", "not_a_server_error",
         "--max-examples", "10", "--seed", "1", "--no-color", *excluded],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,  # its cache stays out of the checkout
    )  # fmt: skip
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    doc = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    verbs = {"get", "put", "post", "delete", "patch", "head", "options"}
    operations = sum(len(verbs & set(methods)) for methods in doc["paths"].values())
    # Every operation but those above.
    assert f"Selected: {operations - len(NOT_FUZZED)}/{operations}" in report, report[-3000:]
    assert server.process.poll() is None
