"""The walkthrough's failure path (scripts/demo.py) in-process: a failing step ends the demo with exit status 1,
says which request failed, shows the server's last words and stops the server.

The demo passing every step against the real `bentoml serve` is tests/demo/test_walkthrough.py's; here the
server is a small stand-in that answers /readyz and refuses everything else with 413, as a batch limit would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.processes import start_logged
from scripts import demo

# Ready at /readyz; 413 for any POST, as the service answers a batch over its limit.
STAND_IN = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(413)
        self.end_headers()

print("stand-in serving", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class BatchOnly:
    """A walkthrough of one step: a batch the stand-in refuses."""

    def __init__(self, client: httpx.Client, workdir: Path, champion: str) -> None:
        self.client = client

    def steps(self) -> list[tuple[str, Any]]:
        return [("Price a batch", self.batch)]

    def batch(self, out: demo.Transcript) -> None:
        demo.expect(out.call(self.client, "POST", "/predict_batch", [{"median_income": 3.0}]))


def test_a_failing_step_exits_1_says_why_and_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def stand_in(port: int, workdir: Path, **env: str) -> subprocess.Popen[bytes]:
        started.append(start_logged([sys.executable, "-c", STAND_IN, str(port)], workdir / "bentoml.log"))
        return started[-1]

    monkeypatch.setattr(demo, "serve_bentoml", stand_in)
    monkeypatch.setattr(demo, "pipeline", lambda out: "1")
    monkeypatch.setattr(demo, "Walkthrough", BatchOnly)
    with pytest.raises(SystemExit) as exited:
        demo.main()
    assert exited.value.code == 1
    printed = capsys.readouterr()
    assert "✗ demo failed" in printed.err
    assert "/predict_batch: status 413, not 200" in printed.err
    assert "stand-in serving" in printed.err  # the server's last words
    assert "stopped" in printed.out
    (server,) = started
    assert server.poll() is not None
