"""A challenger's prices in shadow, on each engine (``log_db``: SQLite, then PostgreSQL): stored beside the champion's
by request and position, read back with feedback, kept through a reused id, flushed on close, pruned like
predictions; and the reload path that starts and ends a shadow on every worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from housing.log.queries import SHADOW_COLUMNS, LogReader
from housing.log.reloads import (
    CHALLENGER,
    NO_CHALLENGER,
    Watcher,
    asked_challenger,
    live_workers,
    request_model,
    wait_for_workers,
)
from housing.log.schema import PREDICTIONS, SHADOW
from housing.log.store import LogStore
from housing.log.writer import RequestRows
from housing.periodic import Periodic
from tests.housing.log import test_reloads
from tests.housing.log.rows import give_feedback, row
from tests.stores.engines import LogDatabase

REPLICA = "host:/bentoml"
# A migrated store of the test's database: a fixture.
store = test_reloads.store


def shadow_rows(request_id: str, houses: int, version: str = "8", ts: float = 2.0) -> RequestRows:
    """A challenger's prices of a request's houses, as service.shadow_scorer queues them."""
    return RequestRows(
        {"request_id": [request_id] * houses, "idx": list(range(houses)), "endpoint": ["predict_batch"] * houses,
         "champion_version": ["7"] * houses, "champion_price_usd": [123456.0] * houses,
         "price_usd": [130_000.0 + i for i in range(houses)], "lower_usd": [100_000.0] * houses,
         "upper_usd": [160_000.0] * houses},
        {"ts": ts, "model_version": version, "latency_ms": 3.0, "batch_houses": houses},
    )  # fmt: skip


def test_shadow_prices_sit_beside_the_champions_with_their_feedback(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=0.01)
    log.add([row("a", 0), row("a", 1)])
    log.add([row("b", 0)])
    log.add_shadow(shadow_rows("a", 2))
    log.add_shadow(shadow_rows("b", 1))
    give_feedback(log, [("a", 1, 125_000.0)])
    reads = LogReader(log.store)
    houses = reads.shadow_houses("8", limit=10)
    assert list(houses) == SHADOW_COLUMNS
    assert houses["price_usd"] == [130_000.0, 130_001.0, 130_000.0]  # newest first
    assert houses["champion_price_usd"] == [123456.0] * 3
    assert houses["actual_price_usd"] == [None, 125_000.0, None]
    assert houses["ocean_proximity"] == ["NEAR BAY"] * 3
    assert houses["lower_usd"] == [100_000.0] * 3
    assert reads.shadowed("8") == 3
    assert reads.shadowed("9") == 0
    assert reads.last_shadowed() == "8"
    assert reads.shadow_houses("8", limit=1)["price_usd"] == [130_000.0]
    # Anonymous feedback labels no house.
    log.record_feedback("b", 0, 1.0, authenticated=False)
    assert reads.shadow_houses("8", limit=10)["actual_price_usd"][0] is None
    log.close()


def test_close_flushes_shadow_rows_and_a_reused_id_is_not_renamed_in_the_shadow(log_db: LogDatabase) -> None:
    log = log_db.log(interval_s=5.0)
    log.add([row("dup")])
    log.add([row("dup")])  # renamed by the writer: the client reused its id
    log.add_shadow(shadow_rows("dup", 1))
    log.add_shadow(shadow_rows("other", 500))
    log.close()  # what SIGTERM does: everything queued is written
    assert log_db.count(SHADOW) == 501
    assert log_db.count(PREDICTIONS) == 2
    assert log.store.query("SELECT request_id FROM shadow_predictions ORDER BY id LIMIT 1") == [("dup",)]
    assert log.write_failures == log.dead_letters == 0


def test_pruning_removes_old_shadow_rows_but_keeps_the_labelled(log_db: LogDatabase) -> None:
    now = 1_000_000.0
    log = log_db.log(interval_s=0.01, retention_s=3600.0, prune_interval_s=3600.0, prune_chunk=3)
    log.add([{**row("old", i), "ts": now - 7200} for i in range(5)])
    log.add_shadow(shadow_rows("old", 5, ts=now - 7200))
    log.add_shadow(shadow_rows("new", 2, ts=now))
    give_feedback(log, [("old", 0, 1.0)])
    assert log.prune(now) == 4
    assert log_db.count(SHADOW) == 3
    assert LogReader(log.store).shadow_houses("8", limit=10)["actual_price_usd"] == [1.0]  # "new" has no prediction
    log.close()


class FakeShadow:
    """A worker's challenger: tags named 'broken:*' do not load."""

    def __init__(self) -> None:
        self.tag, self.fraction, self.loads = "", 1.0, 0

    def serving(self) -> tuple[str, float]:
        return self.tag, self.fraction

    def switch(self, bento_tag: str, fraction: float) -> None:
        self.loads += 1
        if bento_tag.startswith("broken"):
            raise OSError("truncated model file")
        self.tag, self.fraction = bento_tag, fraction if bento_tag else 1.0


@pytest.fixture
def shadows(store: LogStore) -> Iterator[list[FakeShadow]]:
    found, threads = [], []
    for index in (1, 2):
        shadow = FakeShadow()
        watcher = Watcher(store, REPLICA, f"{REPLICA}#{index}", lambda: "model:v1", lambda tag: None, shadow, 0.3)
        threads.append(Periodic("model-follower", [(0.05, watcher.poll)]))
        found.append(shadow)
    for thread in threads:
        thread.start()
    yield found
    for thread in threads:
        thread.stop()


def test_every_worker_starts_and_ends_a_shadow(store: LogStore, shadows: list[FakeShadow]) -> None:
    assert asked_challenger(store, REPLICA) == NO_CHALLENGER
    request_model(store, "model-challenger:v2", REPLICA, CHALLENGER, 0.25)
    assert asked_challenger(store, REPLICA) == ("model-challenger:v2", 0.25)
    switched, reports = wait_for_workers(store, REPLICA, "model-challenger:v2", 10, 5, CHALLENGER)
    assert switched
    assert [(r["bento_tag"], r["challenger"], r["error"]) for r in reports] == [
        ("model:v1", "model-challenger:v2", "")
    ] * 2
    assert [s.serving() for s in shadows] == [("model-challenger:v2", 0.25)] * 2
    request_model(store, "", REPLICA, CHALLENGER)
    assert wait_for_workers(store, REPLICA, "", 10, 5, CHALLENGER)[0]
    assert [s.serving() for s in shadows] == [NO_CHALLENGER] * 2
    # The champion's reload path is not the challenger's.
    assert wait_for_workers(store, REPLICA, "model:v1", 10, 5)[0]


def test_a_challenger_that_does_not_load_is_reported_and_retried(store: LogStore, shadows: list[FakeShadow]) -> None:
    request_model(store, "broken:v3", REPLICA, CHALLENGER, 1.0)
    switched, reports = wait_for_workers(store, REPLICA, "broken:v3", 10, 5, CHALLENGER)
    assert not switched
    assert any(r["error"].startswith("challenger broken:v3: OSError: truncated model file") for r in reports)
    time.sleep(1.0)  # the retry interval is 0.3 s: tried again, not every poll (every 0.05 s)
    assert all(2 <= s.loads <= 6 for s in shadows), [s.loads for s in shadows]
    assert all(r["bento_tag"] == "model:v1" for r in live_workers(store, REPLICA, 5))  # the champion is untouched
    request_model(store, "model-challenger:v4", REPLICA, CHALLENGER, 1.0)
    switched, reports = wait_for_workers(store, REPLICA, "model-challenger:v4", 10, 5, CHALLENGER)
    assert switched
    assert [r["error"] for r in reports] == ["", ""]


def test_a_worker_that_starts_during_a_shadow_joins_it(store: LogStore) -> None:
    request_model(store, "model-challenger:v2", REPLICA, CHALLENGER, 0.5)
    shadow = FakeShadow()
    Watcher(store, REPLICA, f"{REPLICA}#1", lambda: "model:v1", lambda tag: None, shadow).poll()
    assert shadow.serving() == ("model-challenger:v2", 0.5)
