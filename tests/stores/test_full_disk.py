"""A full disk is a state, not a crash: the log's disk fills under load and frees again (real tmpfs, real engines).

- SQLite behind a real `bentoml serve`: with the default policy every request is answered and its rows wait in
  memory, `/health` and `/metrics` say so, and once space returns every answered row is in the log, without a
  restart; with the strict policy (``HOUSING_LOG_FULL_POLICY=refuse``) the service answers 503 instead, and again
  no answered request lacks its row.
- PostgreSQL, whose tables sit in a tablespace on the small disk: its disk-full error follows the same rules.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import psycopg
import pytest

from devtools.houses import as_columns
from devtools.local_stores import PostgresServer
from devtools.waits import wait_until
from housing.log.schema import PREDICTIONS
from housing.log.store import PostgresStore
from housing.log.writer import PredictionLog
from service.api_models import EXAMPLE_HOUSE
from tests.housing.log.rows import row
from tests.service.server import Server, start_server
from tests.stores.disks import SmallDisk, small_disk

pytestmark = pytest.mark.integration

CLIENTS = 16
LOAD_S = 5.0


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallDisk]:
    with small_disk(tmp_path_factory.mktemp("small-disk"), size_mb=8) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, disk: SmallDisk, workspace) -> Iterator[dict[str, Server]]:
    """Two services whose logs are on the small disk: the default policy, and the strict one."""
    started: dict[str, Server] = {}
    try:
        for policy in ("queue", "refuse"):
            env = {"HOUSING_PREDICTION_DB": str(disk.path / f"{policy}.db"), "HOUSING_LOG_FULL_POLICY": policy}
            started[policy] = start_server(tmp_path_factory.mktemp(policy), env)
        yield started
    finally:
        for server in started.values():
            server.stop()


def load(url: str, seconds: float) -> list[tuple[int, str]]:
    """``CLIENTS`` threads posting /predict for ``seconds``: (status, request id) of every answer."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict", json=EXAMPLE_HOUSE)
                body = response.json() if response.status_code == 200 else {}
                answers.append((response.status_code, body.get("request_id", "")))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return answers


def logged_ids(db: Path) -> set[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as log:
        return {request_id for (request_id,) in log.execute(f"SELECT request_id FROM {PREDICTIONS}")}  # noqa: S608


def metric(url: str, name: str) -> float:
    lines = [line for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines() if line.startswith(name)]
    return max((float(line.split()[-1]) for line in lines), default=0.0)


def test_a_full_disk_answers_keeps_every_answered_row_and_recovers_without_a_restart(
    servers: dict[str, Server], disk: SmallDisk
) -> None:
    queue, strict = servers["queue"], servers["refuse"]
    assert httpx.post(f"{queue.url}/predict", json=EXAMPLE_HOUSE, timeout=30).status_code == 200
    disk.fill()
    answers = load(queue.url, LOAD_S)
    # SQLite still writes into the pages its files already have; the strict service refuses once a write fails.
    strict_answers: list[tuple[int, str]] = []
    deadline = time.monotonic() + 30
    while not any(status == 503 for status, _ in strict_answers) and time.monotonic() < deadline:
        strict_answers += load(strict.url, 1.0)
    health = httpx.get(f"{queue.url}/health", timeout=30).json()
    unavailable, dropped = (
        metric(queue.url, "housing_prediction_log_unavailable"),
        metric(queue.url, "housing_prediction_log_dropped_rows_total"),
    )
    disk.free()

    assert {status for status, _ in answers} == {200}, "the default policy answers every request"
    assert len(answers) > 200
    assert health["status"] == "degraded"
    assert "disk full" in health["prediction_log_problem"], health
    assert (unavailable, dropped) == (1.0, 0.0)
    # Space is back: every answered request's row reaches the log, with no restart.
    answered = {request_id for _, request_id in answers}
    wait_until(
        lambda: answered <= logged_ids(disk.path / "queue.db"), timeout_s=60, failure="the queued rows were not written"
    )
    wait_until(lambda: httpx.get(f"{queue.url}/health", timeout=30).json()["prediction_log_problem"] is None,
               timeout_s=30, failure="/health still reports the full disk")  # fmt: skip
    assert metric(queue.url, "housing_prediction_log_unavailable") == 0.0

    statuses = {status for status, _ in strict_answers}
    assert 503 in statuses, f"the strict policy answered {statuses}"
    refused = httpx.post(f"{strict.url}/predict", json=EXAMPLE_HOUSE, timeout=30)
    accepted = {request_id for status, request_id in strict_answers if status == 200}
    wait_until(
        lambda: accepted <= logged_ids(disk.path / "refuse.db"),
        timeout_s=60,
        failure="an answered request lacks its row",
    )
    assert refused.status_code in (200, 503)
    wait_until(lambda: httpx.post(f"{strict.url}/predict", json=EXAMPLE_HOUSE, timeout=30).status_code == 200,
               timeout_s=30, failure="the strict service did not answer again once space was back")  # fmt: skip


def test_a_503_of_the_strict_policy_says_why(servers: dict[str, Server], disk: SmallDisk) -> None:
    strict = servers["refuse"]
    answers: list[httpx.Response] = []
    disk.fill()
    try:
        # The first request after the disk filled is accepted (its row waits); once its write fails, the log refuses.
        wait_until(lambda: _refused(strict.url, answers), timeout_s=30, failure="the strict service never refused")
        # Every pricing route is refused alike, houses sent as columns too (a write that finds a freed page in
        # between may let one request through: each route is asked until it refuses).
        columns: list[httpx.Response] = []
        wait_until(lambda: _refused(strict.url, columns, "/predict_columns", as_columns([EXAMPLE_HOUSE])),
                   timeout_s=30, failure="the strict service never refused houses sent as columns")  # fmt: skip
    finally:
        disk.free()
    for refusal in (answers[-1], columns[-1]):
        assert "HOUSING_LOG_FULL_POLICY=refuse" in refusal.text
        assert "disk full" in refusal.text


def _refused(
    url: str, answers: list[httpx.Response] | None = None, path: str = "/predict", body: object = EXAMPLE_HOUSE
) -> bool:
    answer = httpx.post(f"{url}{path}", json=body, timeout=30)
    if answers is not None:
        answers.append(answer)
    return answer.status_code == 503


def test_postgresql_disk_full_keeps_rows_waiting_and_writes_them_once_space_returns(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    name = f"small_{uuid.uuid4().hex[:8]}"
    # Outside pytest's folders, which only root may enter: PostgreSQL must reach its tablespace.
    with small_disk(Path(tempfile.mkdtemp(prefix="housing-pgspace-")), size_mb=16, owner="postgres") as pgdisk:
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute(f"CREATE TABLESPACE {name} LOCATION '{pgdisk.path}'")
        url = f"{postgres.new_schema()}%20-cdefault_tablespace%3D{name}"  # the log's tables on the small disk
        store = PostgresStore(url)
        log = PredictionLog(store, dead_letter_path=tmp_path / "dead.jsonl", interval_s=0.01, max_retries=0)
        try:
            pgdisk.fill()
            for i in range(2000):
                assert log.add([row(f"r{i}", j) for j in range(20)])
            wait_until(lambda: log.unavailable_reason == "disk full", timeout_s=60,
                       failure=f"PostgreSQL never said its disk was full: {log.problem}")  # fmt: skip
            assert not log.accepting
            pgdisk.free()
            assert log.flush(timeout_s=120)
            assert (log.dead_letters, log.dropped, log.problem) == (0, 0, None)
            assert store.query(f"SELECT COUNT(*) FROM {PREDICTIONS}") == [(2000 * 20,)]  # noqa: S608
        finally:
            log.close()
            store.close()
            with psycopg.connect(postgres.url, autocommit=True) as admin:
                schema = url.split("search_path%3D")[1].split("%20")[0]
                admin.execute(f"DROP SCHEMA {schema} CASCADE")
                admin.execute(f"DROP TABLESPACE {name}")
