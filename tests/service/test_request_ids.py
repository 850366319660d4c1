"""A label always lands on the row its client was given: the squatting race of issue 34, replayed in process.

An anonymous client prices made-up inputs under a guessable id (``order-44``) just before, or just after, or at
the same time as the real client; the token holder then sends feedback for the id the real client's answer
carries. The label must join the real client's inputs and price, never the squatter's.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import bentoml
import pytest
from starlette.testclient import TestClient

from housing.log.queries import LogReader, short_id
from service.api_models import EXAMPLE_HOUSE
from tests.service.conftest import FEEDBACK

pytestmark = pytest.mark.integration

REAL = {**EXAMPLE_HOUSE, "ocean_proximity": "NEAR BAY", "median_income": 8.3252}
SQUATTER = {**EXAMPLE_HOUSE, "ocean_proximity": "ISLAND", "median_income": 15.0}


def post(client: TestClient, house: dict, order: str) -> dict:
    response = client.post("/predict", json=house, headers={"X-Request-ID": order})
    assert response.status_code == 200, response.text
    return response.json()


def labelled_inputs(db: Path, request_id: str) -> tuple[str, float, float]:
    """The inputs and price the feedback for ``request_id`` joins, as the training export and /accuracy see it."""
    bentoml.get_current_service().state.log.flush()
    with closing(sqlite3.connect(db)) as log:
        return log.execute(
            "SELECT p.ocean_proximity, p.median_income, p.price_usd FROM feedback f JOIN predictions p "
            "ON p.request_id = f.request_id AND p.idx = f.idx WHERE f.request_id = ?",
            [request_id],
        ).fetchone()


@pytest.mark.parametrize("race", ["squatter first", "real client first", "at once"])
def test_a_label_lands_on_the_rows_its_client_was_given(client: TestClient, service_env: dict, race: str) -> None:
    order = f"order-44-{race.replace(' ', '-')}"
    if race == "at once":
        with ThreadPoolExecutor(2) as pool:
            squatter, real = pool.map(lambda house: post(client, house, order), [SQUATTER, REAL])
    else:
        first, second = (SQUATTER, REAL) if race == "squatter first" else (REAL, SQUATTER)
        answers = [post(client, house, order) for house in (first, second)]
        squatter, real = answers if race == "squatter first" else answers[::-1]
    assert real["request_id"] != squatter["request_id"]
    assert {real["request_id"].partition("~")[0], squatter["request_id"].partition("~")[0]} == {order}
    receipt = client.post("/feedback", json={"request_id": real["request_id"], "actual_price_usd": 452_600.0},
                          headers=FEEDBACK)  # fmt: skip
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["predicted_price_usd"] == real["price_usd"]
    assert labelled_inputs(Path(service_env["HOUSING_PREDICTION_DB"]), real["request_id"]) == (
        "NEAR BAY", 8.3252, real["price_usd"],
    )  # fmt: skip
    # The client's own id names no row: feedback for it is refused, not attached to someone's house.
    guessed = client.post("/feedback", json={"request_id": order, "actual_price_usd": 1.0e5}, headers=FEEDBACK)
    assert guessed.status_code == 404, guessed.text


def test_short_ids_never_show_a_whole_client_id() -> None:
    assert short_id("order-43~0123456789abcdef") == "orde…"
    assert short_id("ab~0123456789abcdef") == "a…"
    assert short_id("3f2b9c1e6a7d4e213f2b9c1e6a7d4e21") == "3f2b9c1e…"


def test_the_training_export_keys_a_label_by_the_answered_id(client: TestClient, service_env: dict) -> None:
    real = post(client, REAL, "order-45")
    assert client.post("/feedback", json={"request_id": real["request_id"], "actual_price_usd": 452_600.0},
                       headers=FEEDBACK).status_code == 200  # fmt: skip
    bentoml.get_current_service().state.log.flush()
    houses = LogReader(bentoml.get_current_service().state.log.store).labelled_houses()
    mine = houses[houses["request_id"] == real["request_id"]]
    assert mine[["ocean_proximity", "median_income"]].to_dict("records") == [
        {"ocean_proximity": "NEAR BAY", "median_income": 8.3252}
    ]
