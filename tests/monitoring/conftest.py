"""A real service with traffic and a real Prometheus scraping it, shared by the monitoring tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from devtools.ports import free_port
from devtools.waits import wait_until
from service.api_models import EXAMPLE_HOUSE
from tests.service.conftest import FEEDBACK
from tests.service.server import Server, start_server
from tests.workspace import ROOT

MONITORING = ROOT / "monitoring"


@pytest.fixture(scope="session")
def scraped(tmp_path_factory: pytest.TempPathFactory, workspace) -> Iterator[tuple[Server, str]]:
    """A service with traffic, and a Prometheus scraping it every second with the project's rules."""
    root = tmp_path_factory.mktemp("prometheus")
    server = start_server(root / "service")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [server.url.removeprefix("http://")]
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(root / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        drive_traffic(server.url)
        wait_for(url, 'up{job="housing-price-service"} == 1')
        wait_for(url, "housing_accuracy_usd")
        yield server, url
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        server.stop()


def drive_traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            client.post("/predict", json=EXAMPLE_HOUSE)
        priced = client.post("/predict_batch", json=[EXAMPLE_HOUSE] * 10).json()
        client.post("/predict_batch", json=[{**EXAMPLE_HOUSE, "median_income": 3.0}] * 300)  # enough for /drift
        client.post("/predict", json={**EXAMPLE_HOUSE, "latitude": 99.0})
        feedback = {"request_id": priced["request_id"], "actual_price_usd": 300_000.0}
        assert client.post("/feedback", json=feedback, headers=FEEDBACK).status_code == 200
        # Predictions reach the log through its writer, and the views are reused for 2 s: poll until /accuracy
        # and /drift have published their gauges.
        deadline = time.monotonic() + 15
        while not client.get("/accuracy").json()["accuracy"] or client.get("/drift").json()["status"] != "ok":
            assert time.monotonic() < deadline, "the priced houses never reached /accuracy and /drift"
            time.sleep(0.2)


def query(url: str, promql: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    # Prometheus answers 503 "Service Unavailable" until its TSDB has opened: raise it as an HTTP error, which
    # wait_for retries, instead of parsing the plain-text body as JSON.
    body = response.raise_for_status().json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(url: str, promql: str, timeout_s: float = 60) -> list[dict]:
    """The query's result once it has one."""
    return wait_until(lambda: query(url, promql), timeout_s, f"no data for {promql!r} after {timeout_s} s", pause_s=0.5)
