"""A worker's challenger in shadow: the same houses priced again, off the request path, logged beside the champion's.

The request path only offers the request's log rows (:meth:`ShadowScorer.offer`: a few attribute reads, a coin
toss for the shadow's fraction of requests, an append to a bounded deque); the champion's answer does not wait for
anything of the challenger's. One thread per worker (``shadow-scorer``) wakes every ``HOUSING_SHADOW_INTERVAL_S``,
takes every queued house (up to ``HOUSING_SHADOW_BATCH_HOUSES`` per call) and prices them with the challenger in
one call: under load many single-house requests share one call, which is what keeps the shadow's cost small beside
the champion's. Its prices, bounds and time go to the prediction log's shadow table with the champion's price
(housing.log.writer ``add_shadow``), keyed by the houses' request id and position. Past ``HOUSING_SHADOW_QUEUE_HOUSES``
queued houses a request is not shadowed (counted), never delayed. On shutdown the thread prices what is queued
before the log writer flushes, so a SIGTERM loses no shadowed house the log would have kept.

The challenger is loaded by the worker's model-follower thread (housing.log.reloads ``Watcher``, through
:meth:`ShadowScorer.switch`): one that fails to load leaves the champion untouched and is tried again later; one
that raises while pricing loses those houses' shadow prices only. Both are counted
(``housing_shadow_failures_total``) and shown on ``/health``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain, repeat

import numpy as np

from housing.columns import FEATURE_COLUMNS
from housing.log.writer import PredictionLog, RequestRows
from service import prometheus_metrics as metrics
from service.model import ServedModel

log = logging.getLogger(__name__)

# The endpoints whose requests are shadowed (by the name the log keeps).
SHADOWED_ENDPOINTS = frozenset({"predict", "predict_batch"})


class ShadowScorer:
    """Price offered requests' houses with the challenger on a thread of its own; log them beside the champion's.

    ``load`` makes a served model of a bento tag (service.model.load_served_model, bound to the compiled forests'
    folder).
    """

    def __init__(
        self,
        log: PredictionLog,
        load: Callable[[str], ServedModel],
        max_houses: int,
        interval_s: float,
        batch_houses: int,
    ) -> None:
        self.log, self._load = log, load
        self.max_houses, self.interval_s, self.batch_houses = max_houses, interval_s, batch_houses
        self.model: ServedModel | None = None
        self.tag, self.fraction = "", 1.0
        # Why the challenger's last pricing failed, and when (None since it last priced).
        self.problem: str | None = None
        self._queue: deque[RequestRows] = deque()
        # Houses queued and houses taken off the queue: only offer() moves the first, only the thread the second.
        self._in = self._out = 0
        self._offering = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------
    def offer(self, rows: RequestRows) -> None:
        """Queue a priced request's rows (its houses, the champion's prices) for the challenger, if it is shadowed."""
        if self.model is None or rows.shared["endpoint"] not in SHADOWED_ENDPOINTS:
            return
        if self.fraction < 1.0 and random.random() >= self.fraction:  # noqa: S311  # nosec B311 - sampling, not security
            return
        houses = len(rows)
        with self._offering:
            if self._in - self._out + houses > self.max_houses:
                metrics.SHADOW_SKIPPED.inc(houses)
                return
            self._in += houses
        self._queue.append(rows)

    @property
    def queued(self) -> int:
        """Houses waiting for the challenger."""
        return self._in - self._out

    # -- the challenger ----------------------------------------------------------------------
    def serving(self) -> tuple[str, float]:
        """The challenger's bento tag ("" for none) and the share of requests it prices (housing.log.reloads.Shadow)."""
        return self.tag, self.fraction

    def switch(self, bento_tag: str, fraction: float) -> None:
        """Price ``fraction`` of the requests with ``bento_tag`` from now on ("": none). A model that does not load
        raises (the caller reports it and retries) and leaves the current challenger as it was."""
        before = self.model
        if bento_tag and bento_tag != self.tag:
            try:
                model = self._load(bento_tag)
            except Exception:
                metrics.SHADOW_FAILURES.labels("load").inc()
                raise
            self.model, self.tag, self.problem = model, bento_tag, None
            log.info("shadow: pricing %.0f%% of the requests with %s", fraction * 100, bento_tag)
        elif not bento_tag:
            self.model, self.tag, self.problem = None, "", None
            log.info("shadow: stopped")
        self.fraction = fraction if bento_tag else 1.0
        for served, value in ((before, 0), (self.model, 1)):
            if served is not None:
                metrics.SHADOW_CHALLENGER.labels(served.info.model_version).set(value)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self, timeout_s: float = 30.0) -> None:
        """Price what is queued, then stop (before the log writer's final flush)."""
        self._stop.set()
        self._thread.join(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued house is priced (and handed to the log); False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.queued and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.queued

    def _run(self) -> None:
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.interval_s)
            self._drain()

    def _drain(self) -> None:
        while self._queue:
            items, houses = [], 0
            while self._queue and houses < self.batch_houses:
                items.append(self._queue.popleft())
                houses += len(items[-1])
            try:
                self._price(items)
            except Exception as exc:  # a challenger that raises costs its shadow prices, nothing else
                metrics.SHADOW_FAILURES.labels("price").inc()
                if self.problem is None:
                    log.exception("shadow: the challenger %s failed to price %d houses", self.tag, houses)
                self.problem = f"challenger {self.tag}: {type(exc).__name__}: {exc} (at {time.strftime('%H:%M:%S')})"
            finally:
                self._out += houses

    def _price(self, items: list[RequestRows]) -> None:
        """Price the requests' houses with the challenger in one call and log each beside the champion's price."""
        model = self.model
        if model is None:  # the shadow ended while they waited
            return
        columns = {name: list(chain.from_iterable(item.columns[name] for item in items)) for name in FEATURE_COLUMNS}
        start = time.perf_counter()
        prices, spread = model.price_and_spread(columns)
        bounds = model.bounds(prices, spread)
        elapsed_ms = (time.perf_counter() - start) * 1000
        houses = len(prices)
        lower, upper = ([None] * houses,) * 2 if bounds is None else bounds.T.tolist()
        champion = np.fromiter(chain.from_iterable(item.columns["price_usd"] for item in items), float, houses)
        per_house = {name: list(chain.from_iterable(repeat(item.shared[key], len(item)) for item in items))
                     for name, key in (("request_id", "request_id"), ("endpoint", "endpoint"),
                                       ("champion_version", "model_version"))}  # fmt: skip
        version = model.info.model_version
        self.log.add_shadow(RequestRows(
            {**per_house, "idx": list(chain.from_iterable(item.columns["idx"] for item in items)),
             "champion_price_usd": champion.tolist(), "price_usd": prices.tolist(), "lower_usd": lower,
             "upper_usd": upper},
            {"ts": time.time(), "model_version": version, "latency_ms": elapsed_ms, "batch_houses": houses},
        ))  # fmt: skip
        self.problem = None
        metrics.SHADOW_HOUSES.labels(version).inc(houses)
        metrics.SHADOW_LATENCY.observe(elapsed_ms / 1000)
        metrics.observe_many(metrics.SHADOW_DIFFERENCE_USD, prices - champion)
        metrics.observe_many(metrics.SHADOW_DIFFERENCE_PCT, (prices - champion) / champion * 100)
