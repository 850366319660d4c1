"""A realistic traffic mix for the prediction service.

Most clients price one house (drawn from the held-out test split); some send
batches, some report the sale price of a house they priced, and a share send
invalid requests, which must be answered 4xx (counted as success when they are).
Thresholds: the run fails (exit code 1) when the failure ratio or the p95
latency passes LOCUST_MAX_FAILURE_RATIO / LOCUST_MAX_P95_MS.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pandas as pd
from benchmark import FEEDBACK_AUTH, request_records  # locust puts this folder on sys.path
from locust import HttpUser, between, events, task

ROOT = Path(__file__).resolve().parents[1]
MAX_FAILURE_RATIO = float(os.environ.get("LOCUST_MAX_FAILURE_RATIO", "0.01"))
MAX_P95_MS = float(os.environ.get("LOCUST_MAX_P95_MS", "250"))


HOUSES = request_records(pd.read_csv(ROOT / "data" / "processed" / "test.csv").drop(columns="median_house_value"))
INVALID = [
    {"latitude": 99.0},
    {"households": 0.0},
    {"ocean_proximity": "NEAR LAKE"},
    {"total_bedrooms": 1e6},
    {"median_income": "high"},
]


class HouseBuyer(HttpUser):
    wait_time = between(0.01, 0.1)

    def on_start(self) -> None:
        self.priced: list[tuple[str, dict[str, Any]]] = []

    @task(20)
    def predict(self) -> None:
        house = random.choice(HOUSES)
        with self.client.post("/predict", json=house, name="/predict", catch_response=True) as response:
            if response.status_code == 200:
                self.priced.append((response.json()["request_id"], house))
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(3)
    def predict_batch(self) -> None:
        self.client.post("/predict_batch", json=random.sample(HOUSES, random.randint(2, 100)), name="/predict_batch")

    @task(2)
    def feedback(self) -> None:
        if not self.priced:
            return
        request_id, _ = self.priced.pop()
        price = random.uniform(50_000, 500_000)
        body = {"request_id": request_id, "actual_price_usd": price}
        self.client.post("/feedback", json=body, headers=FEEDBACK_AUTH, name="/feedback")

    @task(2)
    def invalid(self) -> None:
        body = {**random.choice(HOUSES), **random.choice(INVALID)}
        with self.client.post("/predict", json=body, name="/predict [invalid]", catch_response=True) as response:
            if response.status_code == 400 and "detail" in response.json():
                response.success()
            else:
                response.failure(f"expected a 400 naming the field, got {response.status_code}")


@events.quitting.add_listener
def enforce_thresholds(environment: Any, **_: Any) -> None:
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0.0
    failed = total.fail_ratio > MAX_FAILURE_RATIO or p95 > MAX_P95_MS
    print(
        f"load: {total.num_requests} requests, failure ratio {total.fail_ratio:.4f} (max {MAX_FAILURE_RATIO}), "
        f"p95 {p95:.0f} ms (max {MAX_P95_MS:.0f}) -> {'FAILED' if failed else 'ok'}"
    )
    if failed:
        environment.process_exit_code = 1
