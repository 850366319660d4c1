"""The service behind a real `bentoml serve` (two worker processes), over HTTP."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pandas as pd
import pytest

from devtools.houses import request_records
from service.api_models import EXAMPLE_HOUSE
from tests.service.bad_requests import BAD_REQUESTS, BadRequest, error_text
from tests.service.conftest import FEEDBACK
from tests.service.server import Server, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, workspace) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_happy_paths(http: httpx.Client, champion: dict, test_rows: pd.DataFrame) -> None:
    single = http.post("/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "srv-1"})
    assert single.status_code == 200, single.text
    assert single.headers["x-request-id"] == single.json()["request_id"]
    assert single.json()["request_id"].startswith("srv-1~")
    assert single.json()["model_version"] == champion["version"]
    batch = http.post("/predict_batch", json=request_records(test_rows.head(50)))
    assert batch.status_code == 200
    assert batch.json()["count"] == 50
    mlflow_style = http.post("/invocations", json={"dataframe_records": request_records(test_rows.head(50))})
    assert mlflow_style.json()["predictions"] == pytest.approx(batch.json()["prices_usd"], rel=1e-12)
    sold = {"request_id": single.json()["request_id"], "actual_price_usd": 400_000.0}
    receipt = http.post("/feedback", json=sold, headers=FEEDBACK)
    assert receipt.status_code == 200, receipt.text
    assert http.get("/model").json()["model_version"] == champion["version"]
    assert http.get("/health").json()["status"] == "ok"
    assert http.get("/livez").status_code == http.get("/readyz").status_code == 200
    assert "/predict" in http.get("/docs.json").json()["paths"]


def test_explanations_sum_to_the_served_prices(http: httpx.Client, test_rows: pd.DataFrame) -> None:
    houses = request_records(test_rows.head(30))
    single = http.post("/explain", json=houses[0])
    batch = http.post("/explain", json=houses)
    assert single.status_code == batch.status_code == 200, single.text + batch.text
    prices = http.post("/predict_batch", json=houses).json()["prices_usd"]
    explanations = [*single.json()["explanations"], *batch.json()["explanations"]]
    assert [e["price_usd"] for e in explanations] == [prices[0], *prices]
    for explanation in explanations:
        assert set(explanation["contributions_usd"]) == set(EXAMPLE_HOUSE)
        total = explanation["base_usd"] + sum(explanation["contributions_usd"].values())
        assert abs(total - explanation["price_usd"]) < 1.0


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda b: b.id)
def test_bad_requests(http: httpx.Client, bad: BadRequest) -> None:
    response = http.post(bad.path, content=bad.body, headers={"Content-Type": "application/json", **FEEDBACK})
    assert response.status_code == bad.status, response.text
    assert bad.field in error_text(response.json())
    assert bad.rule in error_text(response.json())


def test_oversized_requests_get_413(http: httpx.Client) -> None:
    assert http.post("/predict_batch", json=[EXAMPLE_HOUSE] * 501).status_code == 413
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    assert http.post("/predict_batch", content=huge, headers={"Content-Type": "application/json"}).status_code == 413


def test_no_worker_died_and_nothing_failed(http: httpx.Client, server: Server) -> None:
    # After every bad input above: still alive and serving, and the request log holds no 5xx.
    assert server.process.poll() is None
    assert http.post("/predict", json=EXAMPLE_HOUSE).status_code == 200
    time.sleep(0.5)  # request lines reach the files within 100 ms
    files = server.log_dir.glob("requests-*.log")
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    assert {line["status"] for line in lines} >= {200, 400, 404, 413}
    assert not [line for line in lines if line["status"] >= 500]


# wrk's script: a POST of one house, and the count of answers that closed their connection.
BURST_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Request-ID"] = "burst"
wrk.body = [==[%s]==]
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) closes = 0 end
function response(status, headers, body)
  if headers["connection"] == "close" then closes = closes + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("closes") end
  io.write(string.format('{"requests": %%d, "closes": %%d, "non_2xx": %%d}\\n',
    summary.requests, total, summary.errors.status))
end
"""


def test_one_burst_of_keep_alive_connections_spreads_across_the_workers(server: Server, tmp_path: Path) -> None:
    """wrk opens 32 keep-alive connections at once and keeps them busy: once the first second has moved them
    (service.balance), both workers serve a fair share, at the cost of a few connections closed and reopened."""
    script = tmp_path / "burst.lua"
    script.write_text(BURST_SCRIPT % json.dumps(EXAMPLE_HOUSE))
    command = ["wrk", "-t", "2", "-c", "32", "-d", "5s", "-s", str(script), f"{server.url}/predict"]
    settled = time.time() + 1.0
    run = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    time.sleep(0.5)  # request lines reach the files within 100 ms
    lines = [(path.name, json.loads(line)) for path in server.log_dir.glob("requests-*.log") for line in path.open()]
    burst = [(worker, logged_at(line["ts"])) for worker, line in lines if line.get("client_request_id") == "burst"]
    served = Counter(worker for worker, at in burst if at >= settled)
    assert run["non_2xx"] == 0
    assert len(burst) >= run["requests"]  # wrk counts only the answers that came before its time was up
    assert len(served) == 2, served
    assert min(served.values()) >= sum(served.values()) * 0.3, served
    assert run["closes"] <= run["requests"] * 0.1, run


def logged_at(ts: str) -> float:
    """A request log line's time (``2026-11-30T02:23:37.883Z``) as a Unix time."""
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def test_metrics_endpoint(http: httpx.Client, champion: dict) -> None:
    http.post("/predict", json=EXAMPLE_HOUSE)
    http.post("/predict_batch", json=[EXAMPLE_HOUSE] * 3)
    http.post("/predict", json={**EXAMPLE_HOUSE, "latitude": 99.0})
    text = http.get("/metrics").text
    version = champion["version"]
    # BentoML's own request metrics...
    assert 'housing_request_total{endpoint="/predict",http_response_code="200"' in text
    assert 'http_response_code="400"' in text
    assert "housing_request_duration_seconds_bucket" in text
    # ...and the service's, summed over both workers.
    assert f'housing_predictions_total{{endpoint="predict",model_version="{version}"}}' in text
    assert f'housing_predictions_total{{endpoint="predict_batch",model_version="{version}"}}' in text
    assert 'housing_batch_size_bucket{endpoint="predict_batch",le="5.0"}' in text
    assert "housing_predicted_price_usd_bucket" in text
    assert 'housing_validation_failures_total{endpoint="/predict",field="latitude"}' in text
    assert "housing_prediction_log_queue" in text
    assert re.search(rf'housing_model_info{{[^}}]*model_version="{version}"[^}}]*}} 1\.0', text), text[-2000:]


def test_every_200_has_exactly_one_row_under_load(tmp_path: Path, workspace, test_rows: pd.DataFrame) -> None:
    """32 clients, mixed traffic; then a graceful stop: every 200 is in the log exactly once, nothing else is."""
    server = start_server(tmp_path / "load")
    houses = request_records(test_rows.head(300))
    rng = random.Random(7)
    plan = [(i, rng.choice(["single", "single", "single", "batch", "invalid"])) for i in range(640)]

    # One pool of 32 keep-alive connections, one per client thread (a client each would cost more than the requests).
    client = httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=32))

    def call(item: tuple[int, str]) -> tuple[str, str, int]:
        i, kind = item
        request_id = f"load-{i}"
        if kind == "single":
            r = client.post("/predict", json=houses[i % 300], headers={"X-Request-ID": request_id})
        elif kind == "batch":
            r = client.post("/predict_batch", json=houses[:5], headers={"X-Request-ID": request_id})
        else:
            r = client.post("/predict", json={**houses[0], "latitude": 99.0}, headers={"X-Request-ID": request_id})
        return r.headers["x-request-id"], kind, r.status_code

    with client, ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(call, plan))
    assert server.stop() == 0  # SIGTERM: workers flush their queues before exiting

    expected = {rid: (1 if kind == "single" else 5) for rid, kind, status in outcomes if status == 200}
    assert all(status == (400 if kind == "invalid" else 200) for _, kind, status in outcomes)
    with sqlite3.connect(server.db) as db:
        logged = dict(db.execute("SELECT request_id, COUNT(*) FROM predictions GROUP BY request_id").fetchall())
    assert logged == expected
