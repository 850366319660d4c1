"""A worker's periodic chores on one thread (housing.periodic)."""

from __future__ import annotations

import threading
import time

import pytest

from housing.periodic import Periodic


def test_each_chore_runs_at_its_own_interval_and_a_failing_one_goes_on() -> None:
    runs = {"fast": 0, "slow": 0, "broken": 0}
    done = threading.Event()

    def chore(name: str) -> None:
        runs[name] += 1
        if runs["slow"] >= 3:
            done.set()
        if name == "broken":
            raise RuntimeError("the database is away")

    periodic = Periodic("chores", [(0.01, lambda: chore("fast")), (0.05, lambda: chore("slow")),
                                   (0.02, lambda: chore("broken"))])  # fmt: skip
    periodic.start()
    assert done.wait(10)
    periodic.stop()
    stopped = dict(runs)
    time.sleep(0.1)
    assert runs == stopped  # nothing runs once stop() returned
    assert runs["fast"] > runs["slow"] >= 3
    assert runs["broken"] > 1  # raising did not end the thread


def test_stop_waits_for_the_chore_in_progress() -> None:
    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    periodic = Periodic("slow", [(0.01, slow)])
    periodic.start()
    assert started.wait(10)
    periodic.stop()
    assert finished.is_set()


def test_a_thread_needs_a_chore() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Periodic("idle", [])
