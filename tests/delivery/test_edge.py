"""deploy/edge/nginx.conf.template: nginx in front of a real `bentoml serve`, bounding header size and time.

uvicorn (under `bentoml serve`) reads headers of any size for as long as a client takes to send them; the edge
refuses oversized headers, closes half-sent requests after the client timeout, reads whole bodies before the
service sees them and caps bodies just above what the service's largest legal batch needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.ports import free_port
from devtools.processes import stop
from devtools.waits import wait_ready
from service.api_models import EXAMPLE_HOUSE
from tests.service.server import Server, start_server
from tests.workspace import ROOT

pytestmark = pytest.mark.integration

TEMPLATE = ROOT / "deploy" / "edge" / "nginx.conf.template"
VARIABLES = ("EDGE_LISTEN", "EDGE_UPSTREAM", "EDGE_CLIENT_TIMEOUT")
CLIENT_TIMEOUT_S = 2  # the tests' EDGE_CLIENT_TIMEOUT; production uses 10s
MARGIN_S = 3
# The service's own body limit (service/config.py): max_batch_size houses x HOUSE_BYTES + BODY_SLACK_BYTES.
LARGEST_BATCH = 10_000
LARGEST_LEGAL_BODY = LARGEST_BATCH * 512 + 64 * 1024
SERVICE_TIMEOUT_S = 30  # traffic.timeout in service/service.py


def render(values: dict[str, str]) -> str:
    """What `envsubst '${EDGE_LISTEN} ${EDGE_UPSTREAM} ${EDGE_CLIENT_TIMEOUT}'` writes (docs/deployment.md)."""
    text = TEMPLATE.read_text()
    for name in VARIABLES:
        text = text.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return text


def configure(prefix: Path, upstream: str, port: int | None = None) -> Path:
    """A rendered nginx.conf in its own prefix folder (pid and temporary files live there)."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    values = {
        "EDGE_LISTEN": f"127.0.0.1:{port or free_port()}",
        "EDGE_UPSTREAM": upstream,
        "EDGE_CLIENT_TIMEOUT": f"{CLIENT_TIMEOUT_S}s",
    }
    conf.write_text(render(values))
    return conf


def nginx(prefix: Path, conf: Path, *extra: str) -> list[str]:
    executable = shutil.which("nginx", path=os.pathsep.join([os.environ["PATH"], "/usr/sbin", "/sbin"]))
    assert executable, "nginx is not installed: `make tools` installs it"
    command = [executable, "-e", "stderr", "-p", f"{prefix}/", "-c", str(conf)]
    if os.geteuid() == 0:  # as root, workers would switch to `nobody`, who cannot enter pytest's private folders
        command += ["-g", "user root;"]
    return [*command, *extra]


def directive(name: str) -> str:
    """The value of a directive the template sets once."""
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", TEMPLATE.read_text(), re.MULTILINE)
    return value


@dataclass
class Edge:
    url: str
    port: int
    process: subprocess.Popen
    output: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, workspace) -> Iterator[Server]:
    # The production batch size, so the service's body limit is the one the edge's client_max_body_size follows.
    running = start_server(tmp_path_factory.mktemp("edge-server"), {"HOUSING_MAX_BATCH_SIZE": str(LARGEST_BATCH)})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, server: Server) -> Iterator[Edge]:
    prefix = tmp_path_factory.mktemp("edge")
    port = free_port()
    conf = configure(prefix, server.url.removeprefix("http://"), port)
    output = prefix / "nginx.log"
    process = subprocess.Popen(
        nginx(prefix, conf), stdout=output.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    running = Edge(f"http://127.0.0.1:{port}", port, process, output)
    try:
        wait_ready(f"{running.url}/livez", process, 30, log=output)
        yield running
    finally:
        stop(process, 30)  # SIGTERM: nginx's fast shutdown, master and workers


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_the_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = configure(tmp_path, "127.0.0.1:3000")
    assert not re.search(r"\$\{?EDGE_", conf.read_text())
    result = subprocess.run(nginx(tmp_path, conf, "-t"), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr
    envsubst = shutil.which("envsubst")  # the documented renderer, where gettext-base is installed
    if envsubst:
        values = {"EDGE_LISTEN": "8080", "EDGE_UPSTREAM": "service:3000", "EDGE_CLIENT_TIMEOUT": "10s"}
        rendered = subprocess.run(
            [envsubst, " ".join(f"${{{name}}}" for name in VARIABLES)],
            input=TEMPLATE.read_text(),
            env={**os.environ, **values},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert rendered == render(values)


def test_the_limits_follow_the_service() -> None:
    """The body cap sits just above the service's own limit; the upstream timeout just above the service's."""
    body_cap = int(directive("client_max_body_size").removesuffix("m")) * 1024 * 1024
    assert LARGEST_LEGAL_BODY < body_cap < 1.25 * LARGEST_LEGAL_BODY
    assert directive("large_client_header_buffers") == "4 16k"
    assert directive("client_header_timeout") == directive("client_body_timeout") == "${EDGE_CLIENT_TIMEOUT}"
    assert SERVICE_TIMEOUT_S < int(directive("proxy_read_timeout").removesuffix("s")) <= SERVICE_TIMEOUT_S + 10
    assert directive("server_tokens") == "off"
    assert directive("proxy_http_version") == "1.1"
    assert directive("proxy_request_buffering") == "on"


def test_predictions_pass_through_with_their_request_id(edge: Edge, server: Server, http: httpx.Client) -> None:
    direct = http.post(f"{server.url}/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "edge-direct-1"})
    proxied = http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "edge-proxied-1"})
    assert direct.status_code == proxied.status_code == 200, proxied.text
    assert proxied.json()["price_usd"] == direct.json()["price_usd"]
    assert proxied.headers["x-request-id"] == proxied.json()["request_id"]
    assert proxied.json()["request_id"].startswith("edge-proxied-1~")
    assert proxied.headers["server"] == "nginx"  # server_tokens off: no version
    # Without an id (or with one the service would refuse) nginx makes one; its access log and the answer agree.
    made = http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE, headers={"X-Request-ID": "bad id!"})
    assert made.status_code == 200
    assert made.json()["request_id"] == made.headers["x-request-id"]
    # The service keeps nginx's id for correlation, with a suffix of its own.
    request_id, suffix = made.headers["x-request-id"].split("~")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert re.fullmatch(r"[0-9a-f]{16}", suffix)
    # nginx writes the access log line after the answer has gone.
    deadline = time.monotonic() + 5
    while f'"request_id":"{request_id}"' not in edge.output.read_text():
        assert time.monotonic() < deadline, f"{request_id} not in the access log: {edge.output.read_text()[-2000:]}"
        time.sleep(0.05)
    # Prometheus scrapes the service directly; the edge does not expose /metrics.
    assert http.get(f"{edge.url}/metrics").status_code == 404
    assert http.get(f"{server.url}/metrics").status_code == 200


def test_the_largest_legal_batch_passes_and_a_larger_body_gets_413(edge: Edge, http: httpx.Client) -> None:
    houses = json.dumps([EXAMPLE_HOUSE] * LARGEST_BATCH).encode()
    body = houses + b" " * (LARGEST_LEGAL_BODY - len(houses))  # exactly the service's limit
    answer = http.post(f"{edge.url}/predict_batch", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["count"] == LARGEST_BATCH
    too_large = b"[" + b" " * (7 * 1024 * 1024) + b"]"
    refused = http.post(f"{edge.url}/predict_batch", content=too_large, headers={"Content-Type": "application/json"})
    assert refused.status_code == 413
    assert "x-request-id" not in refused.headers  # nginx answered: the service never read it


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # nginx may close before it has read everything
        sock.sendall(data)


def status_of(port: int, request: bytes, timeout_s: float = 10) -> int:
    """Send ``request`` on a raw socket (in a thread, so an early answer is read) and return the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sender = threading.Thread(target=send_quietly, args=(sock, request), daemon=True)
        sender.start()
        reply = b""
        while b"\r\n" not in reply and len(reply) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        sender.join(timeout_s)
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply.split(b" ", 2)[1])


MIB = 1024 * 1024
OVERSIZED = {
    "one 1 MiB header": b"GET /livez HTTP/1.1\r\nHost: edge\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n",
    "200 headers of 1 KiB": b"GET /livez HTTP/1.1\r\nHost: edge\r\n"
    + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1024) for i in range(200))
    + b"\r\n",
    "a 1 MiB request line": b"GET /livez?" + b"a" * MIB + b" HTTP/1.1\r\nHost: edge\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_oversized_headers_are_refused_quickly(
    edge: Edge, server: Server, http: httpx.Client, request_bytes: bytes
) -> None:
    start = time.monotonic()
    status = status_of(edge.port, request_bytes)
    assert 400 <= status < 500, status  # 400 (header too large) or 414 (request line too long)
    assert time.monotonic() - start < 5
    assert http.get(f"{server.url}/readyz").status_code == 200
    assert http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE).status_code == 200


def closed_by_the_timeout(sockets: list[socket.socket], start: float) -> dict[int, float]:
    """When each socket was closed by its peer (EOF or reset); all must be, within the timeout and a margin."""
    deadline = start + CLIENT_TIMEOUT_S + MARGIN_S
    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(sockets):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while len(closed) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    more = key.fileobj.recv(4096)  # type: ignore[union-attr]
                except ConnectionResetError:
                    more = b""
                if not more:  # a 408 answer, if any, comes before the end of the stream
                    closed[key.data] = time.monotonic()
                    selector.unregister(key.fileobj)
    assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} still open after {deadline - start:.0f} s"
    return closed


def connect_and_stall(port: int, count: int, request: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
        sock.sendall(request)
    return sockets


def test_half_sent_headers_are_closed_after_the_timeout_while_others_are_served(
    edge: Edge, server: Server, http: httpx.Client
) -> None:
    start = time.monotonic()
    sockets = connect_and_stall(edge.port, 200, b"POST /predict HTTP/1.1\r\nHost: edge\r\n")
    try:
        served = http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE, timeout=10)
        assert served.status_code == 200, served.text
        assert time.monotonic() - start < CLIENT_TIMEOUT_S  # the 200 hanging connections were all still open
        closed = closed_by_the_timeout(sockets, start)
        assert min(closed.values()) - start >= CLIENT_TIMEOUT_S - 0.5  # closed by the timeout, not at once
    finally:
        for sock in sockets:
            sock.close()
    assert http.get(f"{server.url}/readyz").status_code == 200


def test_stalled_bodies_never_reach_the_service_and_one_client_has_at_most_the_limit_in_flight(
    edge: Edge, server: Server, http: httpx.Client
) -> None:
    per_client = int(directive("limit_conn per_client"))
    stalled = b"POST /predict HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
    start = time.monotonic()
    sockets = connect_and_stall(edge.port, per_client, stalled)
    try:
        time.sleep(0.5)  # nginx has read their headers: each now counts against the client's limit
        assert http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE).status_code == 429
        # nginx is still reading those bodies: the service has none of them and serves others at once.
        assert http.post(f"{server.url}/predict", json=EXAMPLE_HOUSE, timeout=5).status_code == 200
        closed_by_the_timeout(sockets, start)
    finally:
        for sock in sockets:
            sock.close()
    assert http.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE).status_code == 200


def test_the_edge_forwards_the_services_routes_and_nothing_else(edge: Edge, server: Server, http: httpx.Client) -> None:
    documented = {
        *http.get(f"{server.url}/docs.json").json()["paths"],
        *http.get(f"{server.url}/openapi.json").json()["paths"],
    } - {"/metrics"}  # Prometheus scrapes the service directly: the edge keeps the metrics inside
    pages = ["/", "/docs", "/docs.json", "/openapi.json", "/static_content/swagger-ui.css", "/livez", "/readyz"]
    for number, path in enumerate(sorted({*documented, *pages}), start=1):
        # From an address of its own: the edge allows one client two batch requests a minute.
        with httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.1.{number}"), timeout=30) as client:
            answer = client.get(f"{edge.url}{path}")
        assert "x-request-id" in answer.headers, f"{path}: {answer.status_code}, not forwarded"  # the service answered
    for path in [f"/x-{uuid.uuid4()}", "/predict/", "/metrics", "/schema.json", "/admin/", "/static_content/a/b"]:
        answer = http.get(f"{edge.url}{path}")
        assert answer.status_code == 404, path
        assert "x-request-id" not in answer.headers, f"{path} reached the service"


def test_one_client_gets_two_batches_a_minute(edge: Edge) -> None:
    """Two batch requests a minute, with a burst of two more: a client of its own (an address no other test used, so
    its allowance is whole) gets three at once, then 429 until the next half minute."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.2.1"), timeout=30) as client:
        statuses = [client.post(f"{edge.url}/predict_batch", json=[EXAMPLE_HOUSE]).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429], statuses
        assert client.post(f"{edge.url}/predict", json=EXAMPLE_HOUSE).status_code == 200  # single houses still pass
