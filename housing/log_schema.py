"""The prediction log's tables and columns: the service writes them, the pipeline's feedback stage reads them.

One row per priced house in ``predictions``; at most one ``feedback`` row per
priced house (the first answer; ``authenticated`` says whether a client with the
feedback token sent it, and only such feedback trains a model); every admin
correction of feedback in ``feedback_corrections``.
"""

from __future__ import annotations

from housing.columns import CATEGORICAL_COLUMN, NUMERIC_COLUMNS

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
CORRECTIONS = "feedback_corrections"
# The feedback column that says a client with the feedback token sent it: only such feedback trains a model.
AUTHENTICATED = "authenticated"

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
}
INDEXES: dict[str, list[tuple[list[str], bool]]] = {
    PREDICTIONS: [(["request_id", "idx"], True), (["ts"], False), (["model_version", "ts"], False)],
    FEEDBACK: [(["request_id", "idx"], True), (["ts"], False)],
    CORRECTIONS: [(["request_id", "idx"], False)],
}
# Columns added after the first release, with the value existing rows get.
ADDED_COLUMNS = {FEEDBACK: {AUTHENTICATED: 0}}
