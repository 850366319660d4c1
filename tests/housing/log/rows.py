"""Rows for the prediction log's tests: a priced house as the service logs it, and feedback for it."""

from __future__ import annotations

from housing.log.writer import PredictionLog
from service.api_models import EXAMPLE_HOUSE


def row(request_id: str, idx: int = 0) -> dict:
    return {"request_id": request_id, "idx": idx, "endpoint": "predict", "ts": 1.0, "model_version": "7",
            "latency_ms": 2.5, "price_usd": 123456.0, **EXAMPLE_HOUSE}  # fmt: skip


def give_feedback(log: PredictionLog, answers: list[tuple[str, int, float]]) -> None:
    """Authenticated feedback (request id, index, price) for predictions queued on ``log``."""
    assert log.flush()
    for request_id, idx, price in answers:
        assert log.record_feedback(request_id, idx, price, authenticated=True)
