"""The service in process (real model, real SQLite log, BentoML's own ASGI app)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from importlib import metadata
from pathlib import Path

import bentoml
import mlflow
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from devtools.houses import request_records
from housing.model_format import fitted_pipeline
from service.api_docs import TITLE
from service.api_models import EXAMPLE_HOUSE, House, columns_of
from service.middleware import MAX_ERROR_BYTES, MAX_ERRORS, capped_error
from service.model import load_served_model
from tests.docs.readme import request_log_fields
from tests.service.bad_requests import BAD_REQUESTS, BadRequest, error_text
from tests.service.conftest import ADMIN, FEEDBACK
from tests.service.described_api import check_described, request_model
from tests.workspace import Workspace

pytestmark = pytest.mark.integration


def test_predict_one_house(client: TestClient, champion: dict) -> None:
    response = client.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "req-123"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"].startswith("req-123~")  # the client's id, kept for correlation, made unique
    assert response.headers["x-request-id"] == body["request_id"]
    assert body["model_name"] == "housing-price-model"
    assert body["model_version"] == champion["version"]
    assert 50_000 < body["price_usd"] < 600_000
    assert 0 <= body["lower_usd"] < body["price_usd"] < body["upper_usd"]
    assert body["interval_coverage"] == 0.9


def test_request_id_is_generated_or_replaced(client: TestClient) -> None:
    generated = client.post("/predict", json=EXAMPLE_HOUSE)
    assert len(generated.json()["request_id"]) == 32
    assert generated.headers["x-request-id"] == generated.json()["request_id"]
    unsafe = client.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "bad id\nwith newline"})
    assert unsafe.json()["request_id"] != "bad id\nwith newline"
    failed = client.post("/predict", json={"nope": 1}, headers={"X-Request-ID": "err-1"})
    assert failed.headers["x-request-id"].startswith("err-1~")


def test_requests_reuse_the_api_callers_built_at_start(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML's API descriptor inspects the method's signature each time it binds; the service binds once."""
    import _bentoml_sdk.method

    inspected: list[object] = []
    signature = _bentoml_sdk.method.inspect.signature
    monkeypatch.setattr(
        _bentoml_sdk.method.inspect, "signature", lambda f, **kw: inspected.append(f) or signature(f, **kw)
    )
    for path, body in (("/predict", EXAMPLE_HOUSE), ("/predict_batch", [EXAMPLE_HOUSE]), ("/explain", EXAMPLE_HOUSE)):
        assert client.post(path, json=body).status_code in (200, 409)
    assert inspected == []


def test_missing_bedrooms_are_accepted(client: TestClient) -> None:
    body = {k: v for k, v in EXAMPLE_HOUSE.items() if k != "total_bedrooms"}
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/predict", json={**body, "total_bedrooms": None}).status_code == 200


def test_batch_keeps_order_and_matches_single_predictions(client: TestClient, test_rows: pd.DataFrame) -> None:
    houses = request_records(test_rows.head(25))
    batch = client.post("/predict_batch", json=houses)
    assert batch.status_code == 200, batch.text
    assert batch.json()["count"] == 25
    singles = [client.post("/predict", json=h).json()["price_usd"] for h in houses[:5]]
    np.testing.assert_allclose(batch.json()["prices_usd"][:5], singles, rtol=1e-12)


def test_batch_limit_gives_413(client: TestClient) -> None:
    assert client.post("/predict_batch", json=[EXAMPLE_HOUSE] * 500).status_code == 200
    too_many = client.post("/predict_batch", json=[EXAMPLE_HOUSE] * 501)
    assert too_many.status_code == 413
    assert "houses: at most 500 houses per request, got 501" in too_many.text


def test_body_limit_gives_413(client: TestClient) -> None:
    response = client.post("/predict", content=b" " * (1024 * 1024 + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "exceeds the limit" in response.text


def test_invocations_speaks_mlflow(client: TestClient, test_rows: pd.DataFrame) -> None:
    rows = test_rows.head(4)
    split = {"columns": list(rows.columns), "data": json.loads(rows.to_json(orient="values"))}
    by_split = client.post("/invocations", json={"dataframe_split": split})
    by_records = client.post("/invocations", json={"dataframe_records": request_records(rows)})
    assert by_split.status_code == by_records.status_code == 200, by_split.text
    assert by_split.json() == by_records.json()
    batch = client.post("/predict_batch", json=request_records(rows)).json()["prices_usd"]
    np.testing.assert_allclose(by_split.json()["predictions"], batch, rtol=1e-12)


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda b: b.id)
def test_bad_requests_get_a_clear_4xx(client: TestClient, bad: BadRequest) -> None:
    response = client.post(bad.path, content=bad.body, headers={"Content-Type": "application/json", **FEEDBACK})
    assert response.status_code == bad.status, response.text
    assert len(response.content) <= MAX_ERROR_BYTES
    text = error_text(response.json())
    assert bad.field in text
    assert bad.rule in text
    assert "IODescriptor" not in response.text
    if bad.status == 400 and "validation error" in response.json()["error"]:  # named as the document names it
        model = request_model(client.get("/docs.json").json(), bad.path)
        assert re.match(rf"\d+ validation errors? for {model}\b", response.json()["error"]), response.json()["error"]
    assert client.post("/predict", json=EXAMPLE_HOUSE).status_code == 200  # still serving


def test_feedback_is_matched_to_its_prediction(client: TestClient, service_env: dict) -> None:
    priced = client.post("/predict_batch", json=[EXAMPLE_HOUSE, {**EXAMPLE_HOUSE, "median_income": 2.0}]).json()
    receipt = client.post(
        "/feedback",
        json={"request_id": priced["request_id"], "index": 1, "actual_price_usd": 250_000.0},
        headers=FEEDBACK,
    )
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["predicted_price_usd"] == pytest.approx(priced["prices_usd"][1])
    assert receipt.json()["error_usd"] == pytest.approx(250_000.0 - priced["prices_usd"][1])
    wrong_index = client.post(
        "/feedback",
        json={"request_id": priced["request_id"], "index": 2, "actual_price_usd": 100_000.0},
        headers=FEEDBACK,
    )
    assert wrong_index.status_code == 404


def test_accuracy_against_feedback(client: TestClient, champion: dict, service_env: dict) -> None:
    priced = client.post("/predict_batch", json=[EXAMPLE_HOUSE, {**EXAMPLE_HOUSE, "median_income": 3.0}]).json()
    for index, actual in enumerate((400_000.0, 150_000.0)):
        feedback = {"request_id": priced["request_id"], "index": index, "actual_price_usd": actual}
        assert client.post("/feedback", json=feedback, headers=FEEDBACK).status_code == 200
    deadline = time.monotonic() + 10
    while not (rows := client.get("/accuracy").json()["accuracy"]) or rows[-1]["n"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (row,) = [r for r in rows if r["model_version"] == champion["version"]]
    assert row["mae"] > 0
    assert row["rmse"] >= row["mae"]
    # Every logged price has its interval; coverage is the share of sale prices inside, as SQL over the log says.
    with sqlite3.connect(service_env["HOUSING_PREDICTION_DB"]) as db:
        logged = db.execute(
            "SELECT COUNT(*), SUM(f.actual_price_usd BETWEEN p.lower_usd AND p.upper_usd) FROM feedback f "
            "JOIN predictions p USING (request_id, idx) WHERE f.authenticated = 1 AND p.model_version = ?",
            [champion["version"]],
        ).fetchone()
    assert (row["n_interval"], row["coverage"]) == (row["n"], pytest.approx(logged[1] / logged[0]))
    assert row["n"] == logged[0]
    over_time = client.get("/accuracy", params={"bucket_s": 3600}).json()
    assert over_time["accuracy"][0]["bucket_start"] % 3600 == 0
    assert client.get("/accuracy", params={"bucket_s": 0}).status_code == 422


def test_every_prediction_is_logged_once(client: TestClient, service_env: dict) -> None:
    ids = [client.post("/predict", json=EXAMPLE_HOUSE).json()["request_id"] for _ in range(20)]
    batch = client.post("/predict_batch", json=[EXAMPLE_HOUSE] * 7).json()
    client.post("/predict", json={"bad": 1})
    _wait_for_rows(Path(service_env["HOUSING_PREDICTION_DB"]), [*ids, batch["request_id"]])
    with sqlite3.connect(service_env["HOUSING_PREDICTION_DB"]) as db:
        counts = dict(db.execute("SELECT request_id, COUNT(*) FROM predictions GROUP BY request_id").fetchall())
        row = db.execute("SELECT * FROM predictions WHERE request_id = ?", [ids[0]]).fetchone()
        indexes = {r[1] for r in db.execute("PRAGMA index_list('predictions')")}
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert all(counts[i] == 1 for i in ids)
    assert counts[batch["request_id"]] == 7
    assert row is not None
    assert journal == "wal"
    assert "idx_predictions_request_id_idx" in indexes


def test_columns_price_as_the_batch_does_and_are_logged_like_it(
    client: TestClient, service_env: dict, test_rows: pd.DataFrame
) -> None:
    houses = request_records(test_rows.head(25))  # some without total_bedrooms: a null in its column
    columns = {name: [house.get(name) for house in houses] for name in EXAMPLE_HOUSE}
    answer = client.post("/predict_columns", json=columns)
    assert answer.status_code == 200, answer.text
    priced, batch = answer.json(), client.post("/predict_batch", json=houses).json()
    assert (priced["count"], priced["model_version"], priced["interval_coverage"]) == (
        25, batch["model_version"], batch["interval_coverage"])  # fmt: skip
    assert (priced["price_usd"], priced["lower_usd"], priced["upper_usd"]) == (
        batch["prices_usd"], batch["lower_usd"], batch["upper_usd"])  # fmt: skip
    without_bedrooms = {name: values for name, values in columns.items() if name != "total_bedrooms"}
    assert client.post("/predict_columns", json=without_bedrooms).status_code == 200
    _wait_for_rows(Path(service_env["HOUSING_PREDICTION_DB"]), [priced["request_id"]])
    with sqlite3.connect(service_env["HOUSING_PREDICTION_DB"]) as db:
        logged = db.execute(
            "SELECT idx, endpoint, price_usd, lower_usd, latitude FROM predictions WHERE request_id = ? ORDER BY idx",
            [priced["request_id"]],
        ).fetchall()
    assert [row[0] for row in logged] == list(range(25))
    assert {row[1] for row in logged} == {"predict_columns"}
    assert [row[2] for row in logged] == priced["price_usd"]
    assert [row[3] for row in logged] == priced["lower_usd"]
    assert [row[4] for row in logged] == columns["latitude"]


def _wait_for_rows(db_path: Path, request_ids: list[str], timeout_s: float = 10.0) -> None:
    """The writer is asynchronous: wait until every request has reached the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path) as db:
            logged = {row[0] for row in db.execute("SELECT DISTINCT request_id FROM predictions")}
        if logged >= set(request_ids):
            return
        time.sleep(0.05)
    raise AssertionError("predictions did not reach the log")


def test_json_request_log(client: TestClient, service_env: dict) -> None:
    client.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "log-ok"})
    client.post("/predict", json={"bad": 1}, headers={"X-Request-ID": "log-bad"})
    for handler in logging.getLogger("housing.requests").handlers:
        handler.flush()  # lines are written every 100 ms by a background thread
    lines = [
        json.loads(line) for line in (Path(service_env["HOUSING_LOG_DIR"]) / "requests.log").read_text().splitlines()
    ]
    ok = next(line for line in lines if line.get("client_request_id") == "log-ok")
    bad = next(line for line in lines if line.get("client_request_id") == "log-bad")
    assert ok["request_id"].startswith("log-ok~")
    assert ok["status"] == 200
    assert ok["path"] == "/predict"
    assert ok["records"] == 1
    assert ok["model_version"]
    assert ok["latency_ms"] > 0
    assert ok["ts"].endswith("Z")
    assert bad["status"] == 400
    # Exactly the fields the README documents: every line's, and those of a line that priced houses.
    every, priced = request_log_fields()
    assert set(ok) == every | priced
    assert set(bad) == every


def test_model_info(client: TestClient, champion: dict) -> None:
    info = client.get("/model").json()
    assert info["model_name"] == champion["model_name"]
    assert info["model_version"] == champion["version"]
    assert info["run_id"] == champion["run_id"]
    assert info["data_version"] == champion["data_version"]
    assert info["test_metrics"]["rmse"] == pytest.approx(champion["test"]["rmse"])
    assert set(info["feature_schema"]["properties"]) == set(EXAMPLE_HOUSE)


def test_model_card_is_the_served_version_s_with_the_registry_s_figures(client: TestClient, champion: dict) -> None:
    card = client.get("/model/card").json()
    assert card["model_details"]["version"] == champion["version"]
    # champion["test"] holds the registered version's tags (6 significant figures).
    for name, value in champion["test"].items():
        assert card["metrics"]["test"][name] == pytest.approx(value, rel=1e-5)
    assert (
        card["metrics"]["intervals"]["nominal"]
        == client.post("/predict", json=EXAMPLE_HOUSE).json()["interval_coverage"]
    )
    assert set(card["slices"]) == {"ocean_proximity", "income_band"}
    markdown = client.get("/model/card?format=markdown")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# Model card: {champion['model_name']} v{champion['version']}")
    for section in ("Intended use", "Training data", "Quantitative analyses", "Ethical considerations"):
        assert f"## {section}" in markdown.text
    refused = client.get("/model/card?format=pdf")
    assert refused.status_code == 422
    assert "format" in refused.text


def test_health_and_probes(client: TestClient, champion: dict) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model_version"] == champion["version"]
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_the_document_describes_this_api(client: TestClient, champion: dict) -> None:
    doc = client.get("/docs.json").json()
    check_described(doc, f"housing-price-mlops {metadata.version('housing-price-mlops')}", champion["version"])
    for path in ("/predict", "/predict_batch", "/predict_columns", "/invocations", "/feedback"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    columns = schemas["HouseColumns"]
    assert {column["maxItems"] for column in columns["properties"].values()} == {500}  # HOUSING_MAX_BATCH_SIZE
    assert columns["example"]["latitude"] == [EXAMPLE_HOUSE["latitude"]]
    assert {name for name, schema in schemas.items() if schema.get("example")} >= {"House", "Feedback", "Invocation"}
    assert any("dataframe_split" in json.dumps(schemas[name].get("example")) for name in schemas)


def test_get_endpoints_are_documented_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/model", "/health", "/model/history"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["ModelInfo"]["example"]["model_name"] == "housing-price-model"
    assert schemas["Health"]["example"]["status"] == "ok"


@pytest.mark.parametrize("page", ["/", "/docs"])
def test_swagger_ui_shows_the_whole_api_from_the_service_s_own_assets(client: TestClient, page: str) -> None:
    served = client.get(page)
    assert served.status_code == 200
    assert "/docs.json" in served.text
    assert f"<title>{TITLE}</title>" in served.text
    assert "googletagmanager" not in served.text  # BentoML's page loads it, and links to BentoML
    assets = re.findall(r"(/static_content/[\w.-]+)", served.text)
    assert {"/static_content/swagger-ui-bundle.js", "/static_content/swagger-ui.css"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_service_prices_equal_mlflow_pyfunc(
    client: TestClient, champion: dict, workspace: Workspace, test_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = test_rows.head(200)
    # The register stage compiled the champion's forest where the service looks: it prices with compiled code.
    health = client.get("/health").json()
    assert (health["model_runtime"], health["interval_runtime"]) == ("lleaves", "lleaves")
    served = client.post("/predict_batch", json=request_records(rows)).json()
    monkeypatch.chdir(workspace.path)  # the workspace's default store: sqlite:///mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    pyfunc = mlflow.pyfunc.load_model(f"models:/housing-price-model/{champion['version']}")
    assert served["model_version"] == champion["version"]
    np.testing.assert_allclose(served["prices_usd"], pyfunc.predict(rows), rtol=1e-10)
    # The bounds too: the interval logic is part of the registered model.
    bounds = pyfunc.predict(rows, params={"intervals": True})
    np.testing.assert_allclose(served["lower_usd"], bounds["lower_usd"], rtol=1e-10)
    np.testing.assert_allclose(served["upper_usd"], bounds["upper_usd"], rtol=1e-10)
    assert served["interval_coverage"] == pyfunc.metadata.get_params_schema().to_dict()[1]["default"]
    # /invocations keeps MLflow's answer unless asked, then answers as `mlflow models serve` would.
    split = {"columns": list(rows.columns), "data": json.loads(rows.to_json(orient="values"))}
    plain = client.post("/invocations", json={"dataframe_split": split}).json()
    np.testing.assert_allclose(plain["predictions"], served["prices_usd"], rtol=1e-12)
    asked = client.post("/invocations", json={"dataframe_split": split, "params": {"intervals": True, "coverage": 0.5}})
    narrower = pyfunc.predict(rows, params={"intervals": True, "coverage": 0.5})
    answered = pd.DataFrame(asked.json()["predictions"])[list(narrower.columns)]
    np.testing.assert_allclose(answered.to_numpy(), narrower.to_numpy(), rtol=1e-10)
    assert (narrower["upper_usd"] - narrower["lower_usd"] < bounds["upper_usd"] - bounds["lower_usd"]).all()


def test_service_and_training_compute_the_same_features(test_rows: pd.DataFrame) -> None:
    # The service's request path (House models -> columns) and the training path (a DataFrame)
    # go through the one feature definition inside the served model and must agree exactly.
    served = load_served_model(bentoml.models.get("housing-price-model:latest"))
    houses = [House(**r) for r in request_records(test_rows.head(100))]
    features = fitted_pipeline(served.estimator).named_steps["features"]
    assert type(features).__module__ == "housing.features"
    np.testing.assert_array_equal(features.transform(columns_of(houses)), features.transform(test_rows.head(100)))


def test_a_long_list_of_errors_is_cut_to_the_first_few() -> None:
    errors = [
        {"type": "missing", "loc": [i, "longitude"], "msg": "Field required", "input": "x" * 5000} for i in range(500)
    ]
    answer = {"error": "500 validation errors for House", "detail": errors}
    capped = json.loads(capped_error(json.dumps(answer).encode()))
    assert capped["error"].startswith("500 validation errors for House; the first 10 are in detail, 490 more")
    assert len(capped["detail"]) == MAX_ERRORS
    assert capped["more_errors"] == 500 - MAX_ERRORS
    assert capped["detail"][3]["loc"] == [3, "longitude"]
    assert len(capped["detail"][0]["input"]) <= 201
    small = json.dumps({"error": "1 validation error", "detail": errors[:1]}).encode()
    assert capped_error(small) == small
    assert json.loads(capped_error(b"not json" * 10_000)) == {"error": "invalid request body", "detail": []}


def test_feedback_needs_its_token_and_keeps_the_first_answer(client: TestClient) -> None:
    priced = client.post("/predict", json=EXAMPLE_HOUSE).json()
    body = {"request_id": priced["request_id"], "actual_price_usd": 300_000.0}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post("/feedback", json=body, headers=FEEDBACK).status_code == 200
    again = client.post("/feedback", json={**body, "actual_price_usd": 200_000.0}, headers=FEEDBACK)
    assert again.status_code == 409
    assert "PUT /admin/feedback" in again.text
    correction = {**body, "actual_price_usd": 310_000.0, "reason": "deed says so"}
    assert client.put("/admin/feedback", json=correction).status_code == 401
    corrected = client.put("/admin/feedback", json=correction, headers=ADMIN)
    assert corrected.status_code == 200, corrected.text
    assert (corrected.json()["previous_price_usd"], corrected.json()["actual_price_usd"]) == (300_000.0, 310_000.0)
    unknown = client.put("/admin/feedback", json={**correction, "request_id": "never-issued"}, headers=ADMIN)
    assert unknown.status_code == 404


def test_non_json_bodies_get_415(client: TestClient) -> None:
    for content_type in ("text/plain", "multipart/form-data", "application/x-www-form-urlencoded"):
        response = client.post("/predict", content=json.dumps(EXAMPLE_HOUSE), headers={"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert "application/json" in response.json()[0]["error"]
    assert (
        client.post(
            "/predict", json=EXAMPLE_HOUSE, headers={"Content-Type": "application/json; charset=utf-8"}
        ).status_code
        == 200
    )


@pytest.mark.parametrize("query", ["bucket_s=inf", "bucket_s=1e400", "bucket_s=nan", "bucket_s=0", "bucket_s=1e12",
                                   "since_ts=-5", "since_ts=inf", "bucket_s=abc"])  # fmt: skip
def test_accuracy_refuses_query_values_out_of_range(client: TestClient, query: str) -> None:
    response = client.get(f"/accuracy?{query}")
    assert response.status_code == 422
    assert query.split("=")[0] in response.text
