"""The served OpenAPI document (``/docs.json``), made valid OpenAPI 3.0 as it declares.

BentoML 1.4 declares ``openapi: 3.0.2`` but fills the document with pydantic's JSON
Schema, which is OpenAPI 3.1's dialect: ``{"type": "null"}`` in ``anyOf`` where 3.0
says ``nullable``, numeric ``exclusiveMinimum``, ``const``, ``examples``, siblings of
``$ref``, and keys of its own (``root_input``). OpenAPI 3.0 tools (validators, code
generators, fuzzers) reject such a document. :func:`openapi_30` rewrites each schema
into 3.0's words without dropping a bound, an example or a key (unknown keys keep
their value under an ``x-`` name); :func:`limit_batches` documents the batch limit
that the service checks itself (``HOUSING_MAX_BATCH_SIZE``, a 413, not a model
bound); service.api_docs then says what the generated document does not (title, version, description,
groups, error answers). :class:`OpenAPIDocument` serves the result on BentoML's own path, built once per
worker and served model: BentoML regenerates its document on every request; :data:`docs_page` serves Swagger UI
over it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from service.api_docs import TITLE, Refusals, describe

# The keys an OpenAPI 3.0 Schema Object may have (besides x- extensions).
SCHEMA_KEYS_30 = frozenset(
    {
        "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
        "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties",
        "required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties",
        "additionalProperties", "description", "format", "default", "nullable", "discriminator", "readOnly",
        "writeOnly", "xml", "externalDocs", "example", "deprecated", "$ref",
    }
)  # fmt: skip
_NULL = {"type": "null"}
DOCUMENT_PATH = "/docs.json"
HOUSE_REF = "#/components/schemas/House"
docs_page = APIRouter(include_in_schema=False)


@docs_page.get("/")
@docs_page.get("/docs")
def docs() -> HTMLResponse:
    """Swagger UI of the whole API (/docs.json), from the assets BentoML serves: FastAPI's default needs a CDN,
    and BentoML's page (the mounted app's routes come first) loads Google Tag Manager and links to BentoML."""
    return get_swagger_ui_html(
        openapi_url=DOCUMENT_PATH,
        title=TITLE,
        swagger_js_url="/static_content/swagger-ui-bundle.js",
        swagger_css_url="/static_content/swagger-ui.css",
        swagger_favicon_url="/static_content/favicon-light-32x32.png",
    )


def served_document(generated: dict[str, Any], max_houses: int, refusals: Refusals, version: str) -> dict[str, Any]:
    """BentoML's generated document as valid OpenAPI 3.0 describing this API (service.api_docs) as ``version``,
    with the batch limit of ``max_houses``."""
    return describe(limit_batches(openapi_30(generated), max_houses), refusals, version)


def openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` whose schemas say in OpenAPI 3.0 what they said in 3.1's JSON Schema."""
    converted = copy.deepcopy(document)
    schemas = converted.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        schemas[name] = schema_30(schema)
    _convert_schemas_in(converted.get("paths", {}))
    for section, value in converted.get("components", {}).items():
        if section != "schemas":
            _convert_schemas_in(value)
    return converted


def _convert_schemas_in(node: Any) -> None:
    """Convert every ``schema`` of the parameters, bodies, responses and headers under ``node``."""
    if isinstance(node, list):
        for item in node:
            _convert_schemas_in(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                node[key] = schema_30(value)
            else:
                _convert_schemas_in(value)


def schema_30(schema: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema (pydantic's dialect) as an OpenAPI 3.0 Schema Object, subschemas included."""
    out = dict(schema)
    _nullable(out)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound, closed in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        _exclusive(out, bound, closed)
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out.setdefault("example", examples[0])
    if out.get("default", 0) is None:
        out["nullable"] = True  # 3.0 checks a default against the schema: a null default needs nullable
    for key in ("items", "not"):
        if isinstance(out.get(key), dict):
            out[key] = schema_30(out[key])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = schema_30(out["additionalProperties"])
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: schema_30(sub) for name, sub in out["properties"].items()}
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [schema_30(sub) for sub in out[key]]
    if "$ref" in out and len(out) > 1:  # 3.0 ignores the siblings of $ref: wrap the reference instead
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return {(key if key in SCHEMA_KEYS_30 or key.startswith("x-") else f"x-{key}"): value for key, value in out.items()}


def _nullable(schema: dict[str, Any]) -> None:
    """``anyOf: [X, {type: null}]`` and ``type: [X, "null"]`` become X with ``nullable: true``."""
    types = schema.get("type")
    if isinstance(types, list):
        kept = [kind for kind in types if kind != "null"]
        if len(kept) < len(types):
            schema["nullable"] = True
        if len(kept) == 1:
            schema["type"] = kept[0]
        else:
            del schema["type"]
            schema["anyOf"] = [*schema.get("anyOf", []), *({"type": kind} for kind in kept)]
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if not isinstance(members, list) or _NULL not in members:
            continue
        kept_members = [member for member in members if member != _NULL]
        schema["nullable"] = True
        if len(kept_members) == 1:
            del schema[key]
            only = kept_members[0]
            # The one schema left is merged in; a reference has to stay a subschema.
            schema.update({"allOf": [only]} if "$ref" in only else {k: v for k, v in only.items() if k not in schema})
        else:
            schema[key] = kept_members


def _exclusive(schema: dict[str, Any], bound: str, closed: str) -> None:
    """3.1's numeric ``exclusiveMinimum: x`` is 3.0's ``minimum: x`` with ``exclusiveMinimum: true``."""
    value = schema.get(bound)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    current = schema.get(closed)
    stricter = current is None or (value >= current if closed == "minimum" else value <= current)
    if stricter:
        schema[closed], schema[bound] = value, True
    else:
        del schema[bound]  # the closed bound already excludes more


def limit_batches(document: dict[str, Any], max_houses: int) -> dict[str, Any]:
    """``document`` with ``maxItems`` on every list of houses (MLflow's rows, each column of houses as columns): the
    service's batch limit.

    The limit is a setting the handlers check before validating (a 413), so the models do not carry it.
    """

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            if node.get("type") == "array" and _refers_to_house(node.get("items")):
                node["maxItems"] = max_houses
            rows = node.get("properties", {}).get("data") if node.get("title") == "DataFrameSplit" else None
            if isinstance(rows, dict):
                rows["maxItems"] = max_houses
            if str(node.get("title", "")).startswith("HouseColumns"):  # houses as columns: a list per field
                for column in node.get("properties", {}).values():
                    column["maxItems"] = max_houses
            for value in node.values():
                visit(value)

    limited = copy.deepcopy(document)
    visit(limited)
    return limited


def _refers_to_house(items: Any) -> bool:
    return isinstance(items, dict) and (
        items.get("$ref") == HOUSE_REF or any(sub.get("$ref") == HOUSE_REF for sub in items.get("allOf", []))
    )


class OpenAPIDocument:
    """ASGI middleware answering ``GET /docs.json`` with ``build()``, built on the first request and kept while
    ``key()`` (the served model) stays the same."""

    def __init__(self, app: Any, build: Callable[[], dict[str, Any]], key: Callable[[], object] = lambda: None):
        self.app = app
        self.build = build
        self.key = key
        self._built: tuple[object, bytes] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != DOCUMENT_PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        key = self.key()
        if self._built is None or self._built[0] != key:
            self._built = (key, json.dumps(self.build()).encode())
        body = self._built[1]
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
