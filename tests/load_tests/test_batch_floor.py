"""The bench's batch floor stands for the service's batch: the same declared request and answer, a real answer."""

from __future__ import annotations

import asyncio

from load_tests.batch_floor import BatchFloor
from service.api_models import EXAMPLE_HOUSE, BatchPrediction, HouseBatch
from service.service import HousePricer


def test_the_floor_declares_the_services_batch_request_and_answer() -> None:
    floor, served = BatchFloor.apis["predict_batch"], HousePricer.apis["predict_batch"]
    assert floor.input_spec.model_json_schema() == served.input_spec.model_json_schema()
    assert floor.output_spec.model_json_schema() == served.output_spec.model_json_schema()


def test_the_floor_answers_every_house_with_a_price_inside_its_bounds() -> None:
    houses = HouseBatch.model_validate([EXAMPLE_HOUSE] * 1000)
    answer = asyncio.run(BatchFloor.inner().predict_batch(houses))
    assert isinstance(answer, BatchPrediction)
    assert answer.count == len(answer.prices_usd) == len(set(answer.prices_usd)) == 1000
    assert answer.lower_usd is not None
    assert answer.upper_usd is not None
    assert all(
        lo < price < up for lo, price, up in zip(answer.lower_usd, answer.prices_usd, answer.upper_usd, strict=True)
    )
