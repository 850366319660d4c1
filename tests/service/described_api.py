"""What the served OpenAPI document says about this API, wherever it is served from (the checkout, a bento)."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import validate

from service.api_docs import CONTACT, DESCRIPTION_FILE, GROUPS, TITLE

# The error answers each operation must document, at least.
EXPECTED_ERRORS = {
    "post /predict": {400, 408, 413, 415, 429, 503},
    "post /predict_batch": {400, 413, 415, 429, 503},
    "post /invocations": {400, 409, 413, 415, 429, 503},
    "post /explain": {400, 409, 413, 415, 429},
    "post /feedback": {400, 401, 403, 404, 409, 413, 415, 429, 503},
    "get /model/card": {404, 422},
    "get /explain/importance": {409, 503},
    "post /admin/rollback": {401, 403, 409, 413, 422, 429, 503},
    "put /admin/feedback": {401, 403, 404, 413, 422},
    "get /livez": set(),
}


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of ``doc`` by ``"method /path"``."""
    return {f"{method} {path}": op for path, item in doc["paths"].items() for method, op in item.items()}


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref") or next((sub["$ref"] for sub in schema.get("allOf", []) if "$ref" in sub), None)
    return resolve(doc, doc["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema


def check_described(doc: dict[str, Any], package: str, model_version: str) -> None:
    """``doc`` describes this API served as ``package`` with ``model_version``, and is valid as it declares."""
    assert doc["openapi"].startswith("3.0")
    validate(doc)
    info = doc["info"]
    assert info["title"] == TITLE
    assert info["version"] == f"{package}, model housing-price-model v{model_version}"
    assert info["description"] == DESCRIPTION_FILE.read_text()
    assert info["contact"] == CONTACT
    assert "BentoML" not in json.dumps(info)  # its template: badges, Slack, "Contact BentoML Team"
    assert "IODescriptor" not in json.dumps(doc)  # the names BentoML derives from the request models
    assert [(tag["name"], tag["description"]) for tag in doc["tags"]] == list(GROUPS.items())
    ops = operations(doc)
    for name, op in ops.items():
        assert len(op["tags"]) == 1, name
        assert op["tags"][0] in GROUPS, name
        assert op["summary"], name
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        assert body is None or body.get("example") is not None, name  # an example request to try
        for parameter in op.get("parameters", []):
            assert {"example", "default"} & {*parameter, *parameter["schema"]}, (name, parameter["name"])
        for status, answer in op["responses"].items():
            if int(status) >= 400:
                assert resolve(doc, answer["content"]["application/json"]["schema"]), (name, status)
        assert {int(status) for status in op["responses"]} >= EXPECTED_ERRORS.get(name, set()), name
        assert "500" not in op["responses"], name
    assert {op["tags"][0] for op in ops.values()} == set(GROUPS)
    assert ops["post /feedback"]["security"] == [{"feedback": []}]
    assert all(op["security"] == [{"admin": []}] for name, op in ops.items() if name.split()[1].startswith("/admin"))
    assert "HOUSING_MAX_EXPLAIN_HOUSES" in ops["post /explain"]["responses"]["413"]["description"]
    assert "HOUSING_MAX_BATCH_SIZE" in ops["post /predict_batch"]["responses"]["413"]["description"]
    paths = ("/predict", "/predict_batch", "/explain", "/invocations", "/feedback")
    assert {path: request_model(doc, path) for path in paths} == {
        "/predict": "House", "/predict_batch": "HouseBatch", "/explain": "ExplainRequest",
        "/invocations": "Invocation", "/feedback": "Feedback",
    }  # fmt: skip


def request_model(doc: dict[str, Any], path: str) -> str:
    """The title of ``POST path``'s request body in ``doc``: the name its validation errors must use."""
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return str(resolve(doc, schema)["title"])
