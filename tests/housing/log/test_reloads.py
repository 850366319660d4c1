"""Reload requests through the log store (SQLite, then PostgreSQL); watchers on threads stand in for workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from housing.log.reloads import Watcher, live_workers, request_model, wait_for_workers
from housing.log.store import LogStore, migrate
from housing.periodic import Periodic
from tests.stores.engines import LogDatabase

REPLICA = "host:/bentoml"


class FakeWorker:
    """Serves a tag; switching to a tag named 'broken:*' fails like a model that does not load."""

    def __init__(self, store: LogStore, name: str, replica: str = REPLICA) -> None:
        self.tag = "model:v1"
        self.watcher = Watcher(store, replica, name, lambda: self.tag, self.switch)
        self.thread = Periodic("model-follower", [(0.05, self.watcher.poll)])

    def switch(self, tag: str) -> None:
        if tag.startswith("broken"):
            raise OSError("truncated model file")
        self.tag = tag


@pytest.fixture
def store(log_db: LogDatabase) -> LogStore:
    store = log_db.store()
    migrate(store)
    return store


@pytest.fixture
def workers(store: LogStore) -> Iterator[list[FakeWorker]]:
    started = [FakeWorker(store, f"{REPLICA}#{index}") for index in (1, 2)]
    for worker in started:
        worker.thread.start()
    yield started
    for worker in started:
        worker.thread.stop()


def test_every_worker_follows_a_reload(store: LogStore, workers: list[FakeWorker]) -> None:
    request_model(store, "model:v2", REPLICA)
    switched, reports = wait_for_workers(store, REPLICA, "model:v2", timeout_s=10, max_age_s=5)
    assert switched
    assert [(r["worker"], r["bento_tag"], r["error"]) for r in reports] == [
        (f"{REPLICA}#1", "model:v2", ""),
        (f"{REPLICA}#2", "model:v2", ""),
    ]
    assert [worker.tag for worker in workers] == ["model:v2", "model:v2"]


def test_a_reload_stays_within_its_replica(store: LogStore, workers: list[FakeWorker]) -> None:
    other = FakeWorker(store, "other:/bentoml#1", replica="other:/bentoml")
    other.thread.start()
    try:
        request_model(store, "model:v2", REPLICA)
        assert wait_for_workers(store, REPLICA, "model:v2", timeout_s=10, max_age_s=5)[0]
        time.sleep(0.3)  # the other replica has polled since
        assert other.tag == "model:v1"
        assert [r["worker"] for r in live_workers(store, "other:/bentoml", max_age_s=5)] == ["other:/bentoml#1"]
    finally:
        other.thread.stop()


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(store: LogStore, workers: list[FakeWorker]) -> None:
    request_model(store, "broken:v3", REPLICA)
    switched, reports = wait_for_workers(store, REPLICA, "broken:v3", timeout_s=10, max_age_s=5)
    assert not switched
    assert any("truncated model file" in r["error"] for r in reports)
    time.sleep(0.3)  # every watcher has seen the request by now, and none retries it
    assert [worker.tag for worker in workers] == ["model:v1", "model:v1"]
    assert all(r["bento_tag"] == "model:v1" for r in live_workers(store, REPLICA, max_age_s=5))


def test_a_worker_ignores_requests_older_than_itself(store: LogStore) -> None:
    request_model(store, "model:old", REPLICA)
    late = FakeWorker(store, f"{REPLICA}#1")
    late.thread.start()
    try:
        time.sleep(0.3)
        assert late.tag == "model:v1"
    finally:
        late.thread.stop()


def test_without_running_workers_a_reload_does_not_wait(store: LogStore) -> None:
    request_model(store, "model:v2", REPLICA)
    started = time.monotonic()
    assert wait_for_workers(store, REPLICA, "model:v2", timeout_s=30, max_age_s=5) == (False, [])
    assert time.monotonic() - started < 5
