"""The service's own Prometheus metrics, next to BentoML's request metrics on ``/metrics``.

Declared at module level in the default registry: ``bentoml serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` for every worker and serves the multiprocess
collector, so counters and histograms add up across workers. Gauges say how
they combine: the model-info gauge is the latest value any worker set. The
prediction log's metrics are the log's own (housing.log.metrics), and the
drift gauges the drift check's (housing.drift_check); ``/metrics`` serves them all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from housing.columns import FEATURE_COLUMNS
from service.api_models import ModelInfo

PRICED_HOUSES = Counter(
    "housing_predictions", "Houses priced, by endpoint and model version.", ["endpoint", "model_version"]
)
PREDICTED_PRICE = Histogram(
    "housing_predicted_price_usd",
    "Predicted prices (USD).",
    buckets=[50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 350_000, 400_000, 450_000, 500_000, 750_000],
)
BATCH_SIZE = Histogram(
    "housing_batch_size",
    "Houses per prediction request.",
    ["endpoint"],
    buckets=[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000],
)
VALIDATION_FAILURES = Counter(
    "housing_validation_failures", "Invalid requests, by endpoint and the field they broke.", ["endpoint", "field"]
)
CHAMPION_FOLLOW_FAILURES = Counter(
    "housing_champion_follow_failures",
    "Polls of the registry's champion that could not import or switch to it (the old model keeps serving).",
)
ABANDONED_REQUESTS = Counter(
    "housing_abandoned_requests",
    "Requests whose work stopped unfinished, by API path (or other) and reason: client_gone (hung up), "
    "body_timeout (body not received in time), timeout (past the server's timeout).",
    ["endpoint", "reason"],
)
FEEDBACK_REFUSED = Counter(
    "housing_feedback_refused", "Feedback refused, by reason (unauthorized, duplicate, unknown, busy).", ["reason"]
)
ACCURACY = Gauge(
    "housing_accuracy_usd",
    "Error of priced houses that received feedback, by metric (mae, rmse) and model version.",
    ["metric", "model_version"],
    multiprocess_mode="mostrecent",
)
FEEDBACK_COUNT = Gauge(
    "housing_feedback_houses", "Priced houses with feedback, by model version.", ["model_version"],
    multiprocess_mode="mostrecent",
)  # fmt: skip
INTERVAL_COVERAGE = Gauge(
    "housing_interval_coverage",
    "Share of sale prices (feedback) inside their logged interval, by model version.",
    ["model_version"],
    multiprocess_mode="mostrecent",
)
INTERVAL_FEEDBACK = Gauge(
    "housing_interval_feedback_houses", "Priced houses with an interval and feedback, by model version.",
    ["model_version"], multiprocess_mode="mostrecent",
)  # fmt: skip
INTERVAL_NOMINAL = Gauge(
    "housing_interval_nominal_coverage", "The coverage the served model's intervals promise, by model version.",
    ["model_version"], multiprocess_mode="mostrecent",
)  # fmt: skip
FOREST_COMPILED = Gauge(
    "housing_model_forest_compiled",
    "1 while a served forest runs as compiled code, 0 while the LightGBM booster serves it (compiling, "
    "missing or unusable artefact: /health says which), by model version and forest (price, interval_scale).",
    ["model_version", "forest"],
    multiprocess_mode="liveall",
)
SHADOW_CHALLENGER = Gauge(
    "housing_shadow_challenger",
    "1 for the challenger a worker prices in shadow, 0 once it no longer does, by model version.",
    ["model_version"],
    multiprocess_mode="mostrecent",
)
SHADOW_HOUSES = Counter(
    "housing_shadow_houses", "Houses the challenger priced in shadow, by its model version.", ["model_version"]
)
SHADOW_SKIPPED = Counter(
    "housing_shadow_skipped_houses",
    "Houses of shadowed requests the challenger did not price: its queue was full (HOUSING_SHADOW_QUEUE_HOUSES).",
)
SHADOW_FAILURES = Counter(
    "housing_shadow_failures",
    "Challenger failures, by stage: load (it did not load: tried again later) or price (it raised while pricing); "
    "the champion serves on either way.",
    ["stage"],
)
SHADOW_LATENCY = Histogram(
    "housing_shadow_latency_seconds",
    "Time of each of the challenger's pricing calls (one call prices every house queued since the last).",
    buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
)
SHADOW_DIFFERENCE_USD = Histogram(
    "housing_shadow_price_difference_usd",
    "The challenger's price minus the champion's, per shadowed house (USD).",
    buckets=[-100_000, -50_000, -20_000, -10_000, -5_000, -1_000, 0, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000],
)
SHADOW_DIFFERENCE_PCT = Histogram(
    "housing_shadow_price_difference_percent",
    "The challenger's price minus the champion's, in % of the champion's, per shadowed house.",
    buckets=[-50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50],
)
MODEL_INFO = Gauge(
    "housing_model_info",
    "The served model (value 1), identified by its labels.",
    ["model_name", "model_version", "family"],
    multiprocess_mode="mostrecent",
)


# Below this many values, observing them one by one is cheaper than the NumPy pass (17 µs for any count,
# against about 3 µs per observe): a single house's price, every /predict, takes the short way.
ONE_BY_ONE = 6


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """``histogram.observe`` for every value, in one pass per bucket instead of one per value.

    Observing 10,000 batch prices one by one cost ~16 ms (each goes to the
    multiprocess files); this counts them with NumPy and adds each bucket once.
    Fewer than ``ONE_BY_ONE`` values are observed one by one.
    It uses the histogram's own bucket values, so a test compares it with
    ``observe`` on the same data.
    """
    if len(values) < ONE_BY_ONE:
        for value in values:
            histogram.observe(float(value))
        return
    values = np.asarray(values, dtype=float)
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts, strict=False):
        if count:
            bucket.inc(int(count))


KNOWN_FIELDS = frozenset(
    {*FEATURE_COLUMNS, "request_id", "index", "actual_price_usd", "dataframe_split", "dataframe_records"}
)


def failed_fields(error_body: bytes) -> list[str]:
    """The fields a 400 response names, as label values.

    'body' stands for the request as a whole and 'other' for a field the
    service does not know, so a client cannot grow the label set at will.
    """
    try:
        detail = json.loads(error_body).get("detail", [])
    except (ValueError, AttributeError):
        return ["body"]
    fields = []
    for item in detail if isinstance(detail, list) else []:
        names = [part for part in item.get("loc", []) if isinstance(part, str) and part != "root"]
        field = names[-1] if names else "body"
        fields.append(field if field in KNOWN_FIELDS or field == "body" else "other")
    return fields or ["body"]


def publish_model(info: ModelInfo, serving: bool) -> None:
    """Say which model serves (``housing_model_info`` 1) or no longer does (0), and its intervals' promise."""
    MODEL_INFO.labels(info.model_name, info.model_version, info.family).set(int(serving))
    if info.interval_coverage is not None and serving:
        INTERVAL_NOMINAL.labels(info.model_version).set(info.interval_coverage)
