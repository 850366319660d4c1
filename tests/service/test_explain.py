"""POST /explain and the explanation views, in process (real champion, real SQLite log, BentoML's own ASGI app),
and the served model's explanations of a log-target forest (a unit test: `make test-fast` runs it)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from devtools.houses import request_records
from housing.columns import FEATURE_COLUMNS
from housing.explain import folding_matrix, in_usd
from housing.log.queries import short_id
from housing.model_format import fitted_pipeline, target_inverse
from housing.params import Params
from service.api_models import EXAMPLE_HOUSE, ModelInfo
from service.model import ServedModel, fast_predict, forest_runtime
from training.estimators import build_model


def assert_sums_to_price(explanation: dict) -> None:
    assert list(explanation["contributions_usd"]) == list(FEATURE_COLUMNS)
    total = explanation["base_usd"] + sum(explanation["contributions_usd"].values())
    assert abs(total - explanation["price_usd"]) < 1.0, explanation


def test_one_house_is_explained_at_its_predicted_price(client: TestClient, champion: dict) -> None:
    predicted = client.post("/predict", json=EXAMPLE_HOUSE).json()
    response = client.post("/explain", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "explain-one"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"].startswith("explain-one~")
    assert body["count"] == 1
    assert (body["model_name"], body["model_version"]) == (champion["model_name"], champion["version"])
    (explanation,) = body["explanations"]
    assert explanation["price_usd"] == predicted["price_usd"]
    assert_sums_to_price(explanation)
    # Income is what prices this Berkeley block group, whose median income is 83,252 USD.
    assert max(explanation["contributions_usd"], key=lambda name: explanation["contributions_usd"][name]) in {
        "median_income", "longitude", "latitude"}  # fmt: skip
    # LightGBM's exact TreeSHAP values of the champion's booster, folded onto the inputs and taken to USD.
    model = bentoml.get_current_service().state.model
    pipeline = fitted_pipeline(model.estimator)
    features = pipeline[:-1].transform(pd.DataFrame([EXAMPLE_HOUSE]))
    values = model.forest.booster.predict(features, pred_contrib=True)
    fold = folding_matrix(pipeline.named_steps["features"].get_feature_sources_out())
    expected = in_usd(values[:, -1], values[:, :-1] @ fold, np.array([predicted["price_usd"]]),
                      target_inverse(model.estimator))  # fmt: skip
    assert explanation["base_usd"] == pytest.approx(expected.base_usd[0], abs=1e-6)
    assert list(explanation["contributions_usd"].values()) == pytest.approx(expected.contributions_usd[0], abs=1e-6)
    health = client.get("/health").json()
    assert (health["explain_runtime"], health["explain_runtime_problem"]) == ("pred_contrib", None)


def test_a_batch_is_explained_house_by_house(client: TestClient, test_rows: pd.DataFrame) -> None:
    houses = request_records(test_rows.head(40))
    prices = client.post("/predict_batch", json=houses).json()["prices_usd"]
    body = client.post("/explain", json=houses).json()
    assert body["count"] == 40
    assert [e["price_usd"] for e in body["explanations"]] == prices
    for explanation in body["explanations"]:
        assert_sums_to_price(explanation)
    assert len({e["base_usd"] for e in body["explanations"]}) == 1  # one base value: the model's average


def test_explanations_are_requests_not_predictions(client: TestClient, service_env: dict) -> None:
    explained = client.post("/explain", json=[EXAMPLE_HOUSE] * 3, headers={"X-Request-ID": "explain-unlogged"})
    priced = client.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "explain-after"})
    assert explained.is_success
    assert priced.is_success
    db = Path(service_env["HOUSING_PREDICTION_DB"])
    # The prediction after it reaching the log means the explanation would have too.
    bentoml.get_current_service().state.log.flush()
    with sqlite3.connect(db) as log:
        logged = {row[0] for row in log.execute("SELECT DISTINCT request_id FROM predictions")}
    assert priced.json()["request_id"] in logged
    assert explained.json()["request_id"] not in logged
    for handler in logging.getLogger("housing.requests").handlers:
        handler.flush()
    request_log = Path(service_env["HOUSING_LOG_DIR"]) / "requests.log"
    lines = [json.loads(line) for line in request_log.read_text().splitlines()]
    (line,) = [line for line in lines if line.get("client_request_id") == "explain-unlogged"]
    assert (line["path"], line["status"], line["records"]) == ("/explain", 200, 3)


def test_the_views_explain_the_latest_predictions(client: TestClient) -> None:
    client.post("/predict_batch", json=[EXAMPLE_HOUSE, {**EXAMPLE_HOUSE, "median_income": 2.0}])
    latest = client.post("/predict", json={**EXAMPLE_HOUSE, "total_bedrooms": None}).json()
    bentoml.get_current_service().state.log.flush()
    recent = client.get("/explain/recent", params={"limit": 3}).json()
    assert len(recent["predictions"]) == 3
    newest = recent["predictions"][0]
    assert newest["request_id"] == short_id(latest["request_id"])
    assert newest["price_usd"] == pytest.approx(latest["price_usd"], rel=1e-12)
    assert len(newest["top"]) == 3
    sizes = [abs(reason["contribution_usd"]) for reason in newest["top"]]
    assert sizes == sorted(sizes, reverse=True)
    explained = client.post("/explain", json={**EXAMPLE_HOUSE, "total_bedrooms": None}).json()["explanations"][0]
    for reason in newest["top"]:
        assert reason["contribution_usd"] == pytest.approx(explained["contributions_usd"][reason["input"]], abs=1e-6)
    importance = client.get("/explain/importance").json()
    assert importance["houses"] >= 4
    assert set(importance["mean_abs_contribution_usd"]) == set(FEATURE_COLUMNS)
    assert max(importance["mean_abs_contribution_usd"].values()) > 0
    assert client.get("/explain/recent", params={"limit": 0}).status_code == 422


def test_a_model_of_another_family_gets_409(
    client: TestClient, params: Params, X_sample: pd.DataFrame, y_sample: pd.Series, monkeypatch: pytest.MonkeyPatch
) -> None:
    linear = build_model({"model": "ridge", "alpha": 1.0}, params.features, "none", seed=0).fit(X_sample, y_sample)
    service = bentoml.get_current_service()
    served = dataclasses.replace(
        service.state.model, estimator=linear, predictor=linear.predict, forest=None, intervals=None,
        info=service.state.model.info.model_copy(update={"family": "linear"}),
    )  # fmt: skip
    monkeypatch.setattr(service.state, "model", served)
    assert client.post("/predict", json=EXAMPLE_HOUSE).status_code == 200  # it serves prices...
    for response in (client.post("/explain", json=EXAMPLE_HOUSE), client.get("/explain/recent"),
                     client.get("/explain/importance")):  # fmt: skip
        assert response.status_code == 409, response.text  # ...but cannot explain them
        assert "explanations need a LightGBM model" in response.text
        assert "linear family" in response.text


def test_the_document_describes_one_house_or_a_bounded_list(client: TestClient) -> None:
    doc = client.get("/docs.json").json()
    body = doc["paths"]["/explain"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    ref = next((sub["$ref"] for sub in body.get("allOf", [body]) if "$ref" in sub), None)
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else body
    assert schema["example"] == EXAMPLE_HOUSE
    forms = schema.get("oneOf") or schema.get("anyOf")
    assert {"$ref": "#/components/schemas/House"} in forms
    (array,) = [form for form in forms if form.get("type") == "array"]
    assert (array["minItems"], array["maxItems"]) == (1, 500)


def test_the_served_path_explains_a_log_target_forest(
    params: Params, X_sample: pd.DataFrame, y_sample: pd.Series
) -> None:
    model = build_model({"model": "lightgbm", "n_estimators": 40}, params.features, "log", seed=0).fit(
        X_sample, y_sample
    )
    forest = forest_runtime(model, None)
    assert forest is not None
    info = ModelInfo(model_name="m", model_version="1", run_id="r", bento_tag="m:1", family="gradient_boosting",
                     data_version="d", test_metrics={}, cv_metrics={}, feature_schema={})  # fmt: skip
    # 100 houses: LightGBM explains them on two threads (PARALLEL_EXPLAIN_ROWS).
    served = ServedModel(estimator=model, predictor=fast_predict(model, forest), info=info, reference={}, forest=forest,
                         parallel={"num_threads": 2})  # fmt: skip
    houses = X_sample.head(100)
    explanation = served.explain({name: houses[name].tolist() for name in houses.columns})
    np.testing.assert_allclose(explanation.price_usd, model.predict(houses), rtol=1e-9)
    total = explanation.base_usd + explanation.contributions_usd.sum(axis=1)
    assert np.abs(total - explanation.price_usd).max() < 1.0
    assert (explanation.base_usd > 10_000).all()  # the base in USD, not the forest's log-space score
