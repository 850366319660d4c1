"""A realistic traffic mix for the prediction service.

Most clients price one house (drawn from the held-out test split, or the CSV given by --houses); some send
batches, some report the sale price of a house they priced (with HOUSING_FEEDBACK_TOKEN, the server's feedback
token), and a share send invalid requests, which must be answered 4xx (counted as success when they are).
Thresholds: the run fails (exit code 1, the reason printed) when the failure ratio or the p95 latency passes
LOCUST_MAX_FAILURE_RATIO / LOCUST_MAX_P95_MS, when no request was made, or when the locustfile raised.

Statistics: give --stats-csv PREFIX, not Locust's --csv. Locust's CSV writer is a greenlet that rewrites its
files every second and is never stopped: since Locust closes those files in its shutdown (locustio/locust#3486),
the writer can wake after they are closed and die with "ValueError: I/O operation on closed file", printing a
traceback after a run that passed. --stats-csv writes the same files (PREFIX_stats.csv, PREFIX_failures.csv,
PREFIX_exceptions.csv) once, from the final statistics, with no greenlet left to outlive them.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import gevent
import pandas as pd
from locust import HttpUser, between, events, task
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

# Locust puts the folder it runs in on the import path: run it in the checkout (run_load.py and the demo do).
from devtools.houses import request_records
from devtools.paths import ROOT
from housing.columns import TARGET_COLUMN
from housing.settings import settings

MAX_FAILURE_RATIO = float(os.environ.get("LOCUST_MAX_FAILURE_RATIO", "0.01"))
MAX_P95_MS = float(os.environ.get("LOCUST_MAX_P95_MS", "250"))

HOUSES: list[dict[str, Any]] = []
INVALID = [
    {"latitude": 99.0},
    {"households": 0.0},
    {"ocean_proximity": "NEAR LAKE"},
    {"total_bedrooms": 1e6},
    {"median_income": "high"},
]


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--houses", default=str(ROOT / "data" / "processed" / "test.csv"), help="CSV of the houses to price"
    )
    parser.add_argument("--stats-csv", default="", help="write PREFIX_stats.csv, _failures.csv, _exceptions.csv")


@events.test_start.add_listener
def load_houses(environment: Any, **_: Any) -> None:
    houses = pd.read_csv(environment.parsed_options.houses)
    HOUSES[:] = request_records(houses.drop(columns=TARGET_COLUMN, errors="ignore"))
    # Locust arms --run-time next, with gevent's clock, which this file's imports and this hook left stale: on a
    # busy machine, where they take longer than the run time, the run ended at once with no request made.
    gevent.get_hub().loop.update_now()


def feedback_auth() -> dict[str, str]:
    token = settings().feedback_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


class HouseBuyer(HttpUser):
    wait_time = between(0.01, 0.1)

    def on_start(self) -> None:
        self.priced: list[tuple[str, dict[str, Any]]] = []
        self.feedback_auth = feedback_auth()

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
        self.client.post("/feedback", json=body, headers=self.feedback_auth, name="/feedback")

    @task(2)
    def invalid(self) -> None:
        body = {**random.choice(HOUSES), **random.choice(INVALID)}
        with self.client.post("/predict", json=body, name="/predict [invalid]", catch_response=True) as response:
            if response.status_code == 400 and "detail" in response.json():
                response.success()
            else:
                response.failure(f"expected a 400 naming the field, got {response.status_code}")


def threshold_failures(environment: Any) -> list[str]:
    """Why the run failed, one reason per threshold passed (empty: it passed)."""
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0.0
    reasons = []
    if total.num_requests == 0:
        reasons.append("no request was made")
    if total.fail_ratio > MAX_FAILURE_RATIO:
        reasons.append(f"failure ratio {total.fail_ratio:.4f} > {MAX_FAILURE_RATIO}")
    if p95 > MAX_P95_MS:
        reasons.append(f"p95 {p95:.0f} ms > {MAX_P95_MS:.0f} ms")
    if environment.runner is not None and environment.runner.exceptions:
        reasons.append(f"{len(environment.runner.exceptions)} exception(s) in the locustfile")
    return reasons


def write_stats_csv(environment: Any, prefix: str) -> None:
    """The final statistics in Locust's own CSV layout (its StatsCSV), written once."""
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    for suffix, write in (("stats", writer.requests_csv), ("failures", writer.failures_csv),
                          ("exceptions", writer.exceptions_csv)):  # fmt: skip
        with Path(f"{prefix}_{suffix}.csv").open("w", newline="") as file:
            write(csv.writer(file))


@events.quitting.add_listener
def enforce_thresholds(environment: Any, **_: Any) -> None:
    if environment.parsed_options.stats_csv:
        write_stats_csv(environment, environment.parsed_options.stats_csv)
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0.0
    reasons = threshold_failures(environment)
    print(
        f"load: {total.num_requests} requests, failure ratio {total.fail_ratio:.4f} (max {MAX_FAILURE_RATIO}), "
        f"p95 {p95:.0f} ms (max {MAX_P95_MS:.0f}) -> {'FAILED: ' + '; '.join(reasons) if reasons else 'ok'}",
        flush=True,
    )
    # Set either way: Locust alone exits 1 on any failed request, even within the failure-ratio budget.
    environment.process_exit_code = 1 if reasons else 0
