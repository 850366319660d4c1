"""What the served OpenAPI document says about this API beyond what BentoML and FastAPI generate.

BentoML 1.4 writes the document's ``info`` from its own template (a README with its badges and Slack, version
"None" outside a built bento, "Contact BentoML Team"), tags its operations "Service APIs" and "Infrastructure"
(the mounted FastAPI app's keep their router's tags), and gives every API the same 400, 404 and 500 answers in
shapes the service does not send. None of it has an option: the service's ``description`` is not read into the
document, and a bento's description replaces only the README of a built bento. :func:`describe` therefore
rewrites those parts of the generated document (service.openapi serves it): the project's title, a version
naming the package and the served model, :file:`service/API.md` as the description (also the bento's, through
bentofile.yaml), operations grouped by what they are for, bearer-token security where a token is asked for,
and every operation's error answers with their schemas. Which answers an operation gives is :class:`Refusals`,
made by service.service from the same settings its middleware is given.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT = "housing-price-mlops"
TITLE = "Housing price service"
CONTACT = {"name": f"ml-platform, {PROJECT}"}
DESCRIPTION_FILE = Path(__file__).with_name("API.md")
# The groups Swagger lists the operations in, in this order, each with its description.
GROUPS = {
    "pricing": "Prices with their intervals, and why a house gets its price.",
    "feedback": "The actual sale price of a priced house: the accuracy the service reports and the next "
    "model's labels. Needs the feedback token (`HOUSING_FEEDBACK_TOKEN`).",
    "model": "The model being served: what it is, its card, its importances and its history of promotions.",
    "monitoring": "Is it up, is it right: probes, health, drift, accuracy, request statistics, the challenger in "
    "shadow against the champion, Prometheus metrics and the dashboard.",
    "admin": "Operators' actions: reload, retrain, roll back, run a challenger in shadow and promote it on its "
    "evidence, correct feedback. Needs the admin token "
    "(`HOUSING_ADMIN_TOKEN`).",
}
# Each operation's group: by its path, or by the path's first segment.
GROUP_OF = {
    "/predict": "pricing", "/predict_batch": "pricing", "/predict_columns": "pricing", "/invocations": "pricing",
    "/explain": "pricing",
    "/feedback": "feedback",
    "/model": "model", "/explain/importance": "model",
    "/health": "monitoring", "/healthz": "monitoring", "/livez": "monitoring", "/readyz": "monitoring",
    "/metrics": "monitoring", "/drift": "monitoring", "/accuracy": "monitoring", "/stats": "monitoring",
    "/explain/recent": "monitoring", "/dashboard": "monitoring", "/shadow": "monitoring",
    "/admin": "admin",
}  # fmt: skip
REF = "#/components/schemas/{}"
# The shapes of error answers: BentoML's (and service.middleware's) for 4xx, its validation error, FastAPI's.
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "array",
        "minItems": 1,
        "maxItems": 1,
        "items": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What was refused, and why."}},
        },
        "description": "A refused request: one object whose `error` names the field or limit and the rule.",
        "example": [{"error": "houses: at most 10000 houses per request, got 10001"}],
    },
    "ValidationFailure": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "How many errors, and the request model that has them."},
            "detail": {"type": "array", "items": {"$ref": REF.format("FieldError")}},
            "more_errors": {"type": "integer", "description": "Errors past the first ten, not listed."},
        },
        "description": "An invalid request body: each error's `loc` names the field (and a house's index in a "
        "list), its `type` and `msg` the rule.",
        "example": {
            "error": "1 validation error for House",
            "detail": [
                {
                    "type": "less_than_equal",
                    "loc": ["latitude"],
                    "msg": "Input should be less than or equal to 42.1",
                    "url": "https://errors.pydantic.dev/2.12/v/less_than_equal",
                }
            ],
        },
    },
    "FieldError": {
        "type": "object",
        "required": ["type", "loc", "msg"],
        "properties": {
            "type": {"type": "string", "description": "The rule broken (pydantic's error type)."},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "url": {"type": "string"},
            "input": {"description": "The value refused, cut short."},
        },
    },
    "HTTPError": {
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string", "description": "What was refused, and why."}},
        "description": "A refused request to a view or admin operation.",
    },
}
# BentoML's generic answers, replaced by the service's own.
GENERIC_ANSWERS = ("400", "404", "500")
GENERIC_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")
TOKEN_SCHEMES = {"feedback": "HOUSING_FEEDBACK_TOKEN", "admin": "HOUSING_ADMIN_TOKEN"}
LOG_DOWN = "The prediction log's database is unreachable (PostgreSQL restarting): retry in a few seconds."
NOT_EXPLAINABLE = "The served model is not a LightGBM forest: it has no explanations."
RETRAINING = "A retraining is running already."
NO_REGISTRY = "No model registry yet (run the pipeline), or it is not readable."
# What the handlers raise themselves (service.service, service.views, service.admin), by operation.
RAISED: dict[str, dict[int, str]] = {
    "POST /invocations": {409: "`params.intervals` asked of a model version registered without intervals."},
    "POST /explain": {409: NOT_EXPLAINABLE,
                      429: "HOUSING_EXPLAIN_CONCURRENCY explanations are running on this worker: retry."},
    "POST /feedback": {404: "No prediction with this `request_id` and `index` in the log.",
                       409: "Feedback for this house is recorded already: an admin corrects it (PUT /admin/feedback).",
                       429: "Too many feedback requests are waiting for their prediction: retry."},
    "GET /model/card": {404: "The served model version was registered without a model card."},
    "GET /model/history": {503: NO_REGISTRY},
    "GET /explain/importance": {409: NOT_EXPLAINABLE, 503: LOG_DOWN},
    "GET /explain/recent": {409: NOT_EXPLAINABLE, 503: LOG_DOWN},
    "GET /drift": {503: LOG_DOWN}, "GET /accuracy": {503: LOG_DOWN}, "GET /stats": {503: LOG_DOWN},
    "POST /admin/reload": {503: "Not every worker could load the model: the answer names them."},
    "POST /admin/retrain": {409: RETRAINING, 503: NO_REGISTRY},
    "POST /admin/retrain/alert": {409: RETRAINING, 503: NO_REGISTRY},
    "POST /admin/rollback": {409: "Nothing to roll back to, or an unknown version.", 503: NO_REGISTRY},
    "PUT /admin/feedback": {404: "No feedback recorded for this `request_id` and `index`."},
    "GET /shadow": {503: LOG_DOWN},
    "POST /admin/shadow": {409: "An unknown version.",
                           503: f"{NO_REGISTRY} Or not every worker could load the challenger: the answer names them."},
    "DELETE /admin/shadow": {503: NO_REGISTRY},
    "POST /admin/shadow/promote": {
        409: "No challenger in shadow, or its evidence does not show it beat the champion: the answer says why "
             "(the refusal is recorded in the history).",
        503: f"{NO_REGISTRY} Or no params.yaml in HOUSING_PROJECT_DIR, or not every worker loaded the new champion."},
}  # fmt: skip


@dataclass(frozen=True)
class Refusals:
    """The error answers of each operation, by the rule that gives them (service.service fills it in).

    ``raised`` holds what handlers raise themselves, by ``"METHOD /path"``: status to description.
    """

    api_paths: Collection[str]
    json_paths: Collection[str]
    tokens: Mapping[str, str]  # path (or path prefix) -> token scheme
    unavailable: Mapping[str, str]  # path -> why it may answer 503
    limits: Mapping[str, str]  # path -> its limit of houses
    unbounded: Collection[str]  # paths exempt from the concurrency bound
    raised: Mapping[str, Mapping[int, str]] = field(default_factory=lambda: RAISED)

    def answers(self, method: str, path: str, has_body: bool) -> dict[int, tuple[str, str]]:
        """Status -> (schema name, description) of the errors ``method path`` answers besides FastAPI's 422."""
        out: dict[int, tuple[str, str]] = {}
        fastapi = path not in self.api_paths
        if not fastapi:
            out[400] = ("ValidationFailure", "Invalid body: the error names the request model, the field and the rule.")
        if (scheme := self.token_scheme(path)) is not None:
            variable = TOKEN_SCHEMES[scheme]
            shape = "HTTPError" if fastapi else "Error"
            out[401] = (shape, "No bearer token: send `Authorization: Bearer <token>`.")
            out[403] = (shape, f"Wrong token, or {scheme} is disabled (the service has no {variable}).")
        if has_body:
            out[408] = ("Error", "The body did not arrive in full within HOUSING_BODY_TIMEOUT_S.")
            limit = f"more houses than the limit ({self.limits[path]}), or " if path in self.limits else ""
            out[413] = ("Error", f"Too large: {limit}a body over the limit in bytes (HOUSING_MAX_BODY_BYTES).")
        if path in self.json_paths:
            out[415] = ("Error", "The body is not `application/json`.")
        if path not in self.unbounded:
            out[429] = ("Error", "Too many requests at once on this worker (HOUSING_MAX_CONCURRENCY): retry.")
        if path in self.unavailable:
            out[503] = ("Error", self.unavailable[path])
        shape = "HTTPError" if fastapi else "Error"
        out.update({status: (shape, why) for status, why in self.raised.get(f"{method.upper()} {path}", {}).items()})
        return out

    def token_scheme(self, path: str) -> str | None:
        return next((s for prefix, s in self.tokens.items() if path == prefix or path.startswith(prefix + "/")), None)


def package_version(bento_tag: str | None) -> str:
    """The package served: the bento's tag when served from a built bento, else the project's installed version."""
    return bento_tag or f"{PROJECT} {metadata.version(PROJECT)}"


def describe(document: dict[str, Any], refusals: Refusals, version: str) -> dict[str, Any]:
    """A copy of BentoML's ``document`` describing this API (see the module's docstring), titled ``version``."""
    out = copy.deepcopy(document)
    out["info"] = {"title": TITLE, "version": version, "description": DESCRIPTION_FILE.read_text(), "contact": CONTACT}
    out["tags"] = [{"name": name, "description": text} for name, text in GROUPS.items()]
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    for name in GENERIC_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(copy.deepcopy(ERROR_SCHEMAS))
    out["components"]["securitySchemes"] = {
        scheme: {"type": "http", "scheme": "bearer", "description": f"The value of {variable}."}
        for scheme, variable in TOKEN_SCHEMES.items()
    }
    for path, item in out["paths"].items():
        for method, operation in item.items():
            _describe_operation(out, method, path, operation, refusals)
    return out


def group_of(path: str) -> str:
    """The group an operation at ``path`` belongs to (KeyError for a path no group claims)."""
    return GROUP_OF[path] if path in GROUP_OF else GROUP_OF["/" + path.split("/")[1]]


def _describe_operation(doc: dict[str, Any], method: str, path: str, operation: dict[str, Any],
                        refusals: Refusals) -> None:  # fmt: skip
    """Group, summary, security, request example and error answers of one operation, in place."""
    operation["tags"] = [group_of(path)]
    description = operation.get("description") or ""
    operation.setdefault("summary", description.split(". ")[0].split("\n\n")[0].replace("\n", " ").rstrip(".") or path)
    if (scheme := refusals.token_scheme(path)) is not None:
        operation["security"] = [{scheme: []}]
        # OpenAPI ignores a header parameter named Authorization: the security scheme is what sends it.
        params = [p for p in operation.get("parameters", []) if p.get("name", "").lower() != "authorization"]
        operation["parameters"] = params
        if not params:
            del operation["parameters"]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and "example" not in body:
        example = _resolve(doc, body["schema"]).get("example")
        if example is not None:
            body["example"] = example
    # BentoML keys its answers by int, FastAPI by str, JSON by str.
    responses = operation["responses"] = {str(status): answer for status, answer in operation["responses"].items()}
    for status in GENERIC_ANSWERS:
        responses.pop(status, None)
    for code, (schema, why) in refusals.answers(method, path, body is not None).items():
        media = {"application/json": {"schema": {"$ref": REF.format(schema)}}}
        responses[str(code)] = {"description": why, "content": media}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its reference (direct, or the one of an ``allOf``) followed."""
    ref = schema.get("$ref") or next((sub["$ref"] for sub in schema.get("allOf", []) if "$ref" in sub), None)
    return _resolve(doc, doc["components"]["schemas"][ref.rsplit("/", 1)[1]]) if ref else schema
