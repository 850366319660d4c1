from __future__ import annotations

import threading
import time

from service.view_cache import ViewCache


def test_a_value_is_reused_while_fresh_then_computed_again() -> None:
    calls = []
    cache = ViewCache(ttl_s=0.2)
    assert cache.get("k", lambda: calls.append(1) or len(calls)) == 1
    assert cache.get("k", lambda: calls.append(1) or len(calls)) == 1
    time.sleep(0.25)
    assert cache.get("k", lambda: calls.append(1) or len(calls)) == 2


def test_a_burst_computes_once() -> None:
    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.1)
        return 7

    cache = ViewCache(ttl_s=5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("k", slow))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [7] * 8
    assert len(calls) == 1


def test_keys_are_bounded_and_zero_ttl_never_reuses() -> None:
    cache = ViewCache(ttl_s=0, max_keys=3)
    for key in range(10):
        cache.get(key, lambda: 0)
    assert len(cache._values) == 3
    calls = []
    cache.get("x", lambda: calls.append(1))
    cache.get("x", lambda: calls.append(1))
    assert len(calls) == 2


def test_a_value_may_live_longer_than_the_cache_says() -> None:
    calls = []
    cache = ViewCache(ttl_s=0)
    assert cache.get("slow", lambda: calls.append(1) or len(calls), ttl_s=60) == 1
    assert cache.get("slow", lambda: calls.append(1) or len(calls), ttl_s=60) == 1
    assert cache.get("slow", lambda: calls.append(1) or len(calls)) == 2  # the cache's own lifetime: 0
