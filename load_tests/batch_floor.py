"""The floor under a served batch: the service's request and answer models over BentoML, with no model behind them.

``make bench`` posts its 10,000-house batch here next to the service's. What this server takes is what HTTP,
JSON and pydantic cost on this machine before any feature, tree, bound or log write: the part of the batch's
time that no model, however small or fast, can remove.

``bentoml serve load_tests.batch_floor:BatchFloor``
"""

from __future__ import annotations

import uuid

import bentoml
import numpy as np

from service.api_models import BatchPrediction, HouseBatch

# Random prices print as long as a model's: a round constant would make the answer cheaper to encode.
PRICES_USD = (15_000.0, 500_001.0)
# The width of a 90% bound, about the served model's: lower = price / (1 + w), upper = price * (1 + w).
RELATIVE_WIDTH = 0.35


@bentoml.service(name="housing-batch-floor", workers=1, logging={"access": {"enabled": False}})
class BatchFloor:
    """``/predict_batch`` as the service declares it, answering with random prices and bounds."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, houses: HouseBatch, /) -> BatchPrediction:
        """One random price and its bounds per house, in the service's answer."""
        prices = self.rng.uniform(*PRICES_USD, size=len(houses.root))
        return BatchPrediction(prices_usd=prices.tolist(), lower_usd=(prices / (1 + RELATIVE_WIDTH)).tolist(),
                               upper_usd=(prices * (1 + RELATIVE_WIDTH)).tolist(), interval_coverage=0.9,
                               count=len(prices), request_id=uuid.uuid4().hex, model_name="floor",
                               model_version="0")  # fmt: skip
