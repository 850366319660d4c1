"""deploy/proxy/haproxy.cfg in front of two real `bentoml serve` replicas: one is killed under load, the other serves.

The same file the compose stack runs, with Debian's haproxy: 32 clients send POST /predict (and a few GET
/health) through it, one replica is killed with SIGKILL (every process of it, as when its container or host
dies), and the test counts what failed. Only requests in flight on the killed replica may fail: POST is not
retried once it reached a replica (it may have been logged), GET is retried on the other one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.ports import free_port
from devtools.processes import stop
from devtools.waits import wait_for_process, wait_until
from service.api_models import EXAMPLE_HOUSE
from tests.service.server import Server, start_server
from tests.workspace import ROOT

pytestmark = pytest.mark.integration

CONFIG = ROOT / "deploy" / "proxy" / "haproxy.cfg"
CLIENTS = 32
GET_CLIENTS = 4  # of the 32, these ask GET /health (idempotent), the others POST /predict
WARM_S = 3.0  # load before the kill
AFTER_S = 5.0  # load after it


def haproxy_executable() -> str:
    executable = shutil.which("haproxy", path=os.pathsep.join([os.environ["PATH"], "/usr/sbin", "/sbin"]))
    assert executable, "haproxy is not installed: `make tools` installs it"
    return executable


def proxy_env(replicas: list[str], port: int, stats_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PROXY_BIND": f"127.0.0.1:{port}",
        "PROXY_STATS_BIND": f"127.0.0.1:{stats_port}",
        "REPLICA_1": replicas[0],
        "REPLICA_2": replicas[1],
    }


def test_the_config_passes_haproxy_c() -> None:
    env = proxy_env(["service-1:3000", "127.0.0.1:3000"], 8080, 8405)
    result = subprocess.run(
        [haproxy_executable(), "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


@dataclass
class Proxy:
    url: str
    stats_url: str
    process: subprocess.Popen
    output: Path

    def metric(self, name: str, labels: str) -> float:
        """One sample of the proxy's Prometheus metrics: ``name{labels}``."""
        text = httpx.get(f"{self.stats_url}/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
        assert match, f"{name}{{{labels}}} not in the proxy's metrics"
        return float(match.group(1))

    def up(self, server: str) -> bool:
        return self.metric("haproxy_server_status", f'proxy="replicas",server="{server}",state="UP"') == 1


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, workspace) -> Iterator[list[Server]]:  # type: ignore[no-untyped-def]
    """Two replicas, each with its own SQLite log, started side by side."""
    root = tmp_path_factory.mktemp("failover")
    with ThreadPoolExecutor(2) as pool:
        # Each replica's own project folder: a replica killed while it opens the checkout's mlflow.db could leave
        # a half-done MLflow migration there for the next pipeline run.
        started = list(
            pool.map(lambda i: start_server(root / f"replica-{i}", {"HOUSING_PROJECT_DIR": str(root)}), (1, 2))
        )
    yield started
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, replicas: list[Server]) -> Iterator[Proxy]:
    port, stats_port = free_port(), free_port()
    env = proxy_env([server.url.removeprefix("http://") for server in replicas], port, stats_port)
    output = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
    process = subprocess.Popen(
        [haproxy_executable(), "-db", "-f", str(CONFIG)],
        env=env,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Proxy(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}", process, output)
    try:
        wait_for_process(
            lambda: _answers(running) and running.up("replica1") and running.up("replica2"),
            "haproxy with both replicas up",
            process,
            30,
            output,
        )
        yield running
    finally:
        stop(process, 10)


def test_the_proxy_hands_a_replica_whole_requests_only(proxy: Proxy, replicas: list[Server]) -> None:
    """A client that pauses mid-body holds a proxy connection, not a replica's: the replica gets the request whole."""
    body = json.dumps(EXAMPLE_HOUSE).encode()
    host, port = proxy.url.removeprefix("http://").split(":")
    head = "\r\n".join([
        "POST /predict HTTP/1.1", f"Host: {host}", "Content-Type: application/json", f"Content-Length: {len(body)}",
        "X-Request-ID: slow-body", "Connection: close", "", "",
    ]).encode()  # fmt: skip
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as client:
        client.sendall(head + body[:10])
        time.sleep(1.5)
        client.sendall(body[10:])
        answer = client.recv(65536).decode()
    took = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 200"), answer[:200]
    line = wait_until(lambda: _logged(replicas, "slow-body"), 10, "the replicas never logged the slow request")
    # The replica saw the request start only once the body was whole: its latency excludes the client's pause.
    assert took >= 1.5
    assert line["latency_ms"] < 500, line


def _logged(replicas: list[Server], client_id: str) -> dict | None:
    for server in replicas:
        for path in server.log_dir.glob("requests*.log"):
            for text in path.read_text().splitlines():
                if (line := json.loads(text)).get("client_request_id") == client_id:
                    return line
    return None


def _answers(proxy: Proxy) -> bool:
    try:
        return httpx.get(f"{proxy.stats_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Outcome:
    method: str
    started: float
    ended: float
    status: int | None  # None: the connection failed
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500


def client_loop(url: str, method: str, stop: threading.Event, outcomes: list[Outcome]) -> None:
    """One client on one keep-alive connection, as fast as it is answered, until ``stop``."""
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if method == "GET":
                    status: int | None = http.get(f"{url}/health").status_code
                else:
                    status = http.post(f"{url}/predict", json=EXAMPLE_HOUSE).status_code
                error = ""
            except httpx.HTTPError as exc:
                status, error = None, type(exc).__name__
            outcomes.append(Outcome(method, started, time.monotonic(), status, error))


def refuses(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # the dying listener dropped the queued connection: it refuses on a later try
        pass
    return False


def kill_replica(server: Server) -> tuple[float, float]:
    """SIGKILL to every process of the replica (its server and its workers): a crash, no shutdown.

    The kill is a window: from the first signal to the moment its port refuses connections, (start, end).
    """
    start = time.monotonic()
    server.kill()
    while not refuses(server.url):
        time.sleep(0.001)
    end = time.monotonic()
    server.process.wait(10)
    return start, end


def test_one_replica_killed_under_load_the_other_takes_the_traffic(
    proxy: Proxy, replicas: list[Server], capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: list[Outcome] = []  # list.append is atomic: the clients share it
    stop = threading.Event()
    methods = ["GET"] * GET_CLIENTS + ["POST"] * (CLIENTS - GET_CLIENTS)
    threads = [threading.Thread(target=client_loop, args=(proxy.url, m, stop, outcomes)) for m in methods]
    for thread in threads:
        thread.start()
    try:
        time.sleep(WARM_S)
        before = len(outcomes)
        kill_start, kill_end = kill_replica(replicas[1])
        time.sleep(AFTER_S)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert before > 100, f"only {before} requests before the kill: the load did not run"
    failed = [outcome for outcome in outcomes if outcome.failed]
    in_flight = [outcome for outcome in outcomes if outcome.started <= kill_end and outcome.ended >= kill_start]
    after = [outcome for outcome in outcomes if outcome.started > kill_end]
    # Only requests in flight at the kill failed, and only POSTs: GETs were retried on the other replica.
    assert all(outcome.started <= kill_end and outcome.ended >= kill_start for outcome in failed), failed
    assert [outcome for outcome in failed if outcome.method == "GET"] == []
    assert len(failed) <= min(len(in_flight), CLIENTS)
    # The surviving replica took the traffic: every request sent after the kill was answered 200.
    assert len(after) > 100
    assert [outcome for outcome in after if outcome.status != 200] == []
    wait_until(lambda: not proxy.up("replica2"), 10, "haproxy still counts the killed replica as up", pause_s=0.2)
    assert proxy.up("replica1")
    retries = proxy.metric("haproxy_backend_retry_warnings_total", 'proxy="replicas"')
    redispatches = proxy.metric("haproxy_backend_redispatch_warnings_total", 'proxy="replicas"')
    window = max(outcome.ended for outcome in outcomes) - min(outcome.started for outcome in outcomes)
    with capsys.disabled():
        print(
            f"\nfailover: kill window {1000 * (kill_end - kill_start):.0f} ms; {len(outcomes)} requests in "
            f"{window:.1f} s ({len(outcomes) / window:.0f}/s) through haproxy, "
            f"{CLIENTS} clients; at the kill {len(in_flight)} in flight, {len(failed)} failed "
            f"({', '.join(sorted({str(o.status or o.error) for o in failed})) or 'none'}), all POST; "
            f"{len(after)} after it, all 200; proxy retries {retries:.0f}, redispatches {redispatches:.0f}"
        )
