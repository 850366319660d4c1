"""Reload requests through the shared SQLite file, followed by watcher threads standing in for workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.reload import Watcher, live_workers, request_model, wait_for_workers


class FakeWorker:
    """Serves a tag; switching to a tag named 'broken:*' fails like a model that does not load."""

    def __init__(self, path: Path, index: int) -> None:
        self.tag = "model:v1"
        self.watcher = Watcher(path, index, lambda: self.tag, self.switch, poll_s=0.05)

    def switch(self, tag: str) -> None:
        if tag.startswith("broken"):
            raise OSError("truncated model file")
        self.tag = tag


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[FakeWorker]]:
    started = [FakeWorker(tmp_path / "state.db", index) for index in (1, 2)]
    for worker in started:
        worker.watcher.start()
    yield started
    for worker in started:
        worker.watcher.stop()


def test_every_worker_follows_a_reload(tmp_path: Path, workers: list[FakeWorker]) -> None:
    db = tmp_path / "state.db"
    request_model(db, "model:v2")
    switched, reports = wait_for_workers(db, "model:v2", timeout_s=10, max_age_s=5)
    assert switched
    assert [(r["worker"], r["bento_tag"], r["error"]) for r in reports] == [(1, "model:v2", ""), (2, "model:v2", "")]
    assert [worker.tag for worker in workers] == ["model:v2", "model:v2"]


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(tmp_path: Path, workers: list[FakeWorker]) -> None:
    db = tmp_path / "state.db"
    request_model(db, "broken:v3")
    switched, reports = wait_for_workers(db, "broken:v3", timeout_s=10, max_age_s=5)
    assert not switched
    assert any("truncated model file" in r["error"] for r in reports)
    time.sleep(0.3)  # every watcher has seen the request by now, and none retries it
    assert [worker.tag for worker in workers] == ["model:v1", "model:v1"]
    assert all(r["bento_tag"] == "model:v1" for r in live_workers(db, max_age_s=5))


def test_a_worker_ignores_requests_older_than_itself(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    request_model(db, "model:old")
    late = FakeWorker(db, 1)
    late.watcher.start()
    try:
        time.sleep(0.3)
        assert late.tag == "model:v1"
    finally:
        late.watcher.stop()


def test_without_running_workers_a_reload_does_not_wait(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    request_model(db, "model:v2")
    started = time.monotonic()
    assert wait_for_workers(db, "model:v2", timeout_s=30, max_age_s=5) == (False, [])
    assert time.monotonic() - started < 5
