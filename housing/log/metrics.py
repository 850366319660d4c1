"""The prediction log's own Prometheus metrics, beside the service's on ``/metrics``.

Declared at module level in the default registry, as every metric of the project: under ``bentoml serve``
each worker writes them to the multiprocess folder and ``/metrics`` adds them up. A process that is no
service (the CLI, the pipeline) counts into its own registry and nobody scrapes it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LOG_QUEUE = Gauge(
    "housing_prediction_log_queue",
    "Requests the prediction log writer found waiting at its latest wake-up (every 50 ms by default).",
    multiprocess_mode="livesum",
)
LOG_WRITE_FAILURES = Counter("housing_prediction_log_write_failures", "Failed prediction-log writes (retried).")
DUPLICATE_IDS = Counter(
    "housing_prediction_log_duplicate_ids", "Requests logged under a server-made id: their X-Request-ID was taken."
)
DEAD_LETTER_ROWS = Counter(
    "housing_prediction_log_dead_letter_rows",
    "Rows the database refused after every retry, kept in the dead-letter file.",
)
PRUNED_ROWS = Counter(
    "housing_prediction_log_pruned_rows", "Predictions deleted past the log's retention (none with feedback)."
)
QUEUED_BYTES = Gauge(
    "housing_prediction_log_queued_bytes",
    "Memory held by the rows waiting in the writer's queue, estimated (bounded by HOUSING_LOG_QUEUE_MAX_MB a worker).",
    multiprocess_mode="livesum",
)
LOG_UNAVAILABLE = Gauge(
    "housing_prediction_log_unavailable",
    "1 while the prediction log's database cannot store rows (unreachable, or its disk full): rows wait in memory.",
    multiprocess_mode="livemax",
)
DROPPED_ROWS = Counter(
    "housing_prediction_log_dropped_rows",
    "Rows no store holds: the writer's queue was full, or neither the database nor the dead-letter file took them.",
)
