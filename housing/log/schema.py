"""The prediction log's tables and columns: the service writes them, the pipeline's feedback stage reads them.

One row per priced house in ``predictions``; at most one ``feedback`` row per
priced house (the first answer; ``authenticated`` says whether a client with the
feedback token sent it, and only such feedback trains a model); every admin
correction of feedback in ``feedback_corrections``; per-minute request totals in
``traffic``; reload requests and each worker's report in ``model_requests`` and
``workers``; each retraining job's state in ``jobs``; and, while a challenger runs in
shadow, its price of each shadowed house in ``shadow_predictions``, keyed like the house's
row in ``predictions`` (request id and position) and carrying the champion's price beside it.

The schema is defined once, here, for every engine (housing.log.store renders
it for SQLite and PostgreSQL). It changes by :data:`MIGRATIONS`, applied in
order at start; each step is idempotent, so a log made before versioning began
is upgraded in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
CORRECTIONS = "feedback_corrections"
TRAFFIC = "traffic"
RELOAD_REQUESTS = "model_requests"
WORKERS = "workers"
JOBS = "jobs"
SHADOW = "shadow_predictions"
# The table that records which migrations a log has had.
MIGRATIONS_TABLE = "schema_migrations"
# The feedback column that says a client with the feedback token sent it: only such feedback trains a model.
AUTHENTICATED = "authenticated"

# Seconds per traffic slot, and the upper bounds (ms) of the request-latency histogram kept per slot; p50 and
# p95 are read from it. The last bound is the service's timeout: no answered request took longer.
TRAFFIC_SLOT_S = 60
LATENCY_BUCKETS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 30_000)
LATENCY_COLUMNS = [f"le_{i}" for i in range(len(LATENCY_BUCKETS_MS))]

SCHEMAS: dict[str, dict[str, type]] = {
    PREDICTIONS: {
        "id": int,
        "request_id": str,
        "idx": int,
        "endpoint": str,
        "ts": float,
        "model_version": str,
        "latency_ms": float,
        "price_usd": float,
        # The price's conformal interval (housing.conformal); NULL for a model without one.
        "lower_usd": float,
        "upper_usd": float,
        **dict.fromkeys(NUMERIC_COLUMNS, float),
        CATEGORICAL_COLUMN: str,
    },
    FEEDBACK: {"id": int, "request_id": str, "idx": int, "ts": float, "actual_price_usd": float, AUTHENTICATED: int},
    CORRECTIONS: {
        "id": int,
        "request_id": str,
        "idx": int,
        "ts": float,
        "previous_price_usd": float,
        "actual_price_usd": float,
        "reason": str,
    },
    TRAFFIC: {"slot": int, "requests": int, "houses": int, **dict.fromkeys(LATENCY_COLUMNS, int)},
    # A replica is one BentoML model store (a host and $BENTOML_HOME/models): a bento tag names a model within it.
    # ``role`` says which model the workers are asked to serve: the champion (which answers), or the challenger (which
    # prices the share ``fraction`` of requests in shadow; an empty tag ends the shadow).
    RELOAD_REQUESTS: {"id": int, "ts": float, "replica": str, "bento_tag": str, "role": str, "fraction": float},
    WORKERS: {
        "worker": str,
        "replica": str,
        "pid": int,
        "bento_tag": str,
        "loaded_ts": float,
        "seen_ts": float,
        "error": str,
        # The challenger's bento tag the worker prices in shadow ("" for none).
        "challenger": str,
    },
    # ``detail`` is the job's own account as JSON: its reasons, decision and outcome (housing.jobs).
    JOBS: {
        "id": int,
        "kind": str,
        "state": str,
        "started": float,
        "finished": float,
        "pid": int,
        "host": str,
        "detail": str,
    },
    # One challenger's price of a shadowed house, after the champion's answer went out: ``champion_price_usd`` is the
    # price the client got (from ``champion_version``), ``latency_ms`` the challenger's pricing call, which priced
    # ``batch_houses`` houses of one or more requests at once.
    SHADOW: {
        "id": int,
        "request_id": str,
        "idx": int,
        "ts": float,
        "endpoint": str,
        "champion_version": str,
        "champion_price_usd": float,
        "model_version": str,
        "price_usd": float,
        "lower_usd": float,
        "upper_usd": float,
        "latency_ms": float,
        "batch_houses": int,
    },
}
# The primary key of each table; "id" keys are numbered by the database.
PRIMARY_KEYS = {TRAFFIC: "slot", WORKERS: "worker"}
# Columns that may be NULL (a house without a bedroom count or interval; a worker that never loaded a model).
NULLABLE = {
    PREDICTIONS: {"total_bedrooms", "lower_usd", "upper_usd"},
    WORKERS: {"loaded_ts"},
    JOBS: {"finished"},
    RELOAD_REQUESTS: {"fraction"},
    SHADOW: {"lower_usd", "upper_usd"},
}
# The value a NOT NULL column takes when an insert leaves it out.
DEFAULTS: dict[str, dict[str, object]] = {
    TRAFFIC: dict.fromkeys(["requests", "houses", *LATENCY_COLUMNS], 0),
    # Writers from before the shadow leave these out.
    RELOAD_REQUESTS: {"role": "champion"},
    WORKERS: {"challenger": ""},
}
INDEXES: dict[str, list[tuple[list[str], bool]]] = {
    PREDICTIONS: [(["request_id", "idx"], True), (["ts"], False), (["model_version", "ts"], False)],
    FEEDBACK: [(["request_id", "idx"], True), (["ts"], False)],
    CORRECTIONS: [(["request_id", "idx"], False)],
    JOBS: [(["kind", "id"], False)],
    # Not unique: a request whose id was logged already keeps its prediction rows under a fresh id (housing.log.writer),
    # while its shadow rows keep the id the client sent.
    SHADOW: [(["request_id", "idx"], False), (["model_version", "id"], False)],
}


def primary_key(table: str) -> str:
    """The table's primary key column."""
    return PRIMARY_KEYS.get(table, "id")


@dataclass(frozen=True)
class Migration:
    """One versioned change of the schema; every step is idempotent.

    Attributes
    ----------
    create : tables made (with their indexes) if missing, from :data:`SCHEMAS`.
    add_columns : per table, columns of :data:`SCHEMAS` added if missing, with the value existing rows get.
    recreate : tables of transient state dropped first, to be made anew (a changed key).
    fill_traffic : whether the traffic table is filled from the logged predictions (a log from before it).
    """

    version: int
    description: str
    create: tuple[str, ...] = ()
    add_columns: dict[str, dict[str, object]] = field(default_factory=dict)
    fill_traffic: bool = False
    recreate: tuple[str, ...] = ()


MIGRATIONS = (
    Migration(1, "predictions, feedback and its corrections", create=(PREDICTIONS, FEEDBACK, CORRECTIONS)),
    Migration(2, "feedback says whether its sender had the token", add_columns={FEEDBACK: {AUTHENTICATED: 0}}),
    Migration(3, "per-minute traffic totals, made from the logged predictions", create=(TRAFFIC,), fill_traffic=True),
    # Workers were numbered per host; on a shared database they are named by host, process and index.
    Migration(4, "reload requests and the workers' reports", create=(RELOAD_REQUESTS, WORKERS), recreate=(WORKERS,)),
    Migration(5, "each price's interval", add_columns={PREDICTIONS: {"lower_usd": None, "upper_usd": None}}),
    Migration(6, "the retraining jobs' state", create=(JOBS,)),
    Migration(
        7,
        "a challenger's prices in shadow, and reload requests and worker reports that name it",
        create=(SHADOW,),
        add_columns={RELOAD_REQUESTS: {"role": "champion", "fraction": None}, WORKERS: {"challenger": ""}},
    ),
)
