"""The worker's challenger in shadow (service.shadow_scorer) with a stand-in model and a real SQLite log: what it
shadows, off the request path; its bound; a challenger that fails to load or to price; and nothing lost on close."""

from __future__ import annotations

import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from housing.log.queries import LogReader
from housing.log.writer import PredictionLog, RequestRows
from service.api_models import EXAMPLE_HOUSE, House, columns_of
from service.prometheus_metrics import SHADOW_FAILURES, SHADOW_HOUSES, SHADOW_SKIPPED
from service.shadow_scorer import ShadowScorer


class Challenger:
    """Prices each house at 10% over ``median_income`` x 100,000 USD (the champion's price in ``request``)."""

    def __init__(self, version: str = "8", broken: bool = False) -> None:
        self.info = SimpleNamespace(model_version=version)
        self.broken = broken

    def price_and_spread(self, columns: dict[str, list[Any]]) -> tuple[np.ndarray, None]:
        if self.broken:
            raise ValueError("the forest is corrupt")
        return np.asarray(columns["median_income"], dtype=float) * 110_000, None

    def bounds(self, prices: np.ndarray, spread: None) -> np.ndarray:
        return np.c_[prices * 0.9, prices * 1.1]


def request(request_id: str, houses: int, endpoint: str = "predict_batch") -> RequestRows:
    """A priced request's log rows as service.service queues them: the champion priced at income x 100,000 USD."""
    columns = columns_of([House(**{**EXAMPLE_HOUSE, "median_income": 1.0 + i}) for i in range(houses)])
    priced = {"idx": range(houses), "price_usd": [(1.0 + i) * 100_000 for i in range(houses)],
              "lower_usd": [None] * houses, "upper_usd": [None] * houses}  # fmt: skip
    shared = {"request_id": request_id, "endpoint": endpoint, "ts": time.time(), "model_version": "7",
              "latency_ms": 1.5}  # fmt: skip
    return RequestRows({**priced, **columns}, shared)


@pytest.fixture
def log(tmp_path: Path) -> PredictionLog:
    return PredictionLog(tmp_path / "p.db", interval_s=0.01)


def scorer(log: PredictionLog, model: Challenger | None = None, **options: Any) -> ShadowScorer:
    """A scorer whose challengers are stand-ins (``model``, else a working one of the tag's version)."""
    settings = {"max_houses": 1000, "interval_s": 0.01, "batch_houses": 100} | options
    return ShadowScorer(log, lambda tag: model or Challenger(tag.rpartition(":v")[2]), **settings)


def offer(log: PredictionLog, shadow: ShadowScorer, rows: RequestRows) -> None:
    """What service.service does with a priced request's rows."""
    log.add(rows)
    shadow.offer(rows)


def test_pricing_requests_are_shadowed_beside_the_champions_prices(log: PredictionLog) -> None:
    shadow = scorer(log)
    offer(log, shadow, request("before", 1, "predict"))  # no challenger yet: nothing to do
    shadow.switch("model-challenger:v8", 1.0)
    assert shadow.serving() == ("model-challenger:v8", 1.0)
    before = SHADOW_HOUSES.labels("8")._value.get()
    offer(log, shadow, request("one", 1, "predict"))
    offer(log, shadow, request("many", 3, "predict_batch"))
    offer(log, shadow, request("columns", 2, "predict_columns"))  # not a shadowed endpoint
    shadow.close()
    log.close()
    houses = LogReader(log.store).shadow_houses("8", limit=100)
    assert sorted(houses["price_usd"]) == pytest.approx([110_000.0, 110_000.0, 220_000.0, 330_000.0])
    assert sorted(houses["champion_price_usd"]) == [100_000.0, 100_000.0, 200_000.0, 300_000.0]
    assert sorted(houses["lower_usd"]) == pytest.approx([99_000.0, 99_000.0, 198_000.0, 297_000.0])
    assert set(houses["champion_version"]) == {"7"}
    assert all(1 <= n <= 4 for n in houses["batch_houses"])
    assert SHADOW_HOUSES.labels("8")._value.get() == before + 4


def test_the_request_path_only_queues(log: PredictionLog) -> None:
    shadow = scorer(log, interval_s=60.0)  # the thread never wakes during the test
    shadow.switch("model-challenger:v8", 1.0)
    rows = request("r", 1, "predict")
    started = time.perf_counter()
    for _ in range(2000):
        shadow.offer(rows)
    per_offer_us = (time.perf_counter() - started) / 2000 * 1e6
    assert shadow.queued == 1000  # the bound: the rest were skipped, not waited for
    assert per_offer_us < 50, per_offer_us
    shadow.switch("", 1.0)  # a stopped shadow prices nothing more
    shadow.close()
    log.close()
    assert LogReader(log.store).shadowed("8") == 0


def test_a_fraction_of_requests_is_shadowed(log: PredictionLog) -> None:
    shadow = scorer(log, interval_s=60.0, max_houses=10_000)
    shadow.switch("model-challenger:v8", 0.25)
    random.seed(1)
    rows = request("r", 1, "predict")
    for _ in range(4000):
        shadow.offer(rows)
    assert 850 < shadow.queued < 1150
    shadow.switch("", 1.0)
    shadow.close()
    log.close()


def test_a_full_queue_skips_requests_and_counts_their_houses(log: PredictionLog) -> None:
    shadow = scorer(log, interval_s=60.0, max_houses=10)
    shadow.switch("model-challenger:v8", 1.0)
    before = SHADOW_SKIPPED._value.get()
    for i in range(3):
        shadow.offer(request(f"r{i}", 5))
    assert shadow.queued == 10
    assert SHADOW_SKIPPED._value.get() == before + 5
    shadow.close()
    log.close()
    assert LogReader(log.store).shadowed("8") == 10  # what was queued was priced on close


def test_a_challenger_that_raises_costs_its_shadow_prices_only(log: PredictionLog) -> None:
    shadow = scorer(log, Challenger(broken=True))
    shadow.switch("model-challenger:v8", 1.0)
    before = SHADOW_FAILURES.labels("price")._value.get()
    offer(log, shadow, request("r", 2))
    assert shadow.flush()
    assert "ValueError: the forest is corrupt" in str(shadow.problem)
    assert SHADOW_FAILURES.labels("price")._value.get() == before + 1
    shadow.close()
    log.close()
    assert LogReader(log.store).prediction("r", 1) is not None  # the champion's rows are all there
    assert LogReader(log.store).shadowed("8") == 0


def test_a_challenger_that_does_not_load_leaves_the_last_one(log: PredictionLog) -> None:
    def load(tag: str) -> Challenger:
        if "broken" in tag:
            raise OSError("no such model")
        return Challenger("8")

    shadow = ShadowScorer(log, load, 100, 0.01, 100)
    shadow.switch("model-challenger:v8", 1.0)
    before = SHADOW_FAILURES.labels("load")._value.get()
    with pytest.raises(OSError, match="no such model"):
        shadow.switch("broken:v9", 0.5)
    assert shadow.serving() == ("model-challenger:v8", 1.0)
    assert SHADOW_FAILURES.labels("load")._value.get() == before + 1
    shadow.close()
    log.close()
