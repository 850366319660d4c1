"""The request middleware around a stand-in app: tokens, media types, value budget, capped errors, ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.handlers
import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.middleware import MAX_ERROR_BYTES, MAX_ERRORS, BackgroundHandler, JsonFormatter, RequestMiddleware


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    if body.startswith(b"bad"):  # a validation error naming many fields, as BentoML writes it
        detail = [{"type": "missing", "loc": [i, "longitude"], "msg": "Field required", "input": "x" * 500}
                  for i in range(1000)]  # fmt: skip
        return JSONResponse({"error": "1000 validation errors", "detail": detail}, status_code=400)
    return JSONResponse({"bytes": len(body), "id": request.headers["x-request-id"]})


def client() -> TestClient:
    app = Starlette(routes=[Route(path, echo, methods=["POST"]) for path in ("/api", "/guarded", "/admin/op")])
    guarded = {"/guarded": lambda auth: None if auth == "Bearer ok" else (401, "authorization: send the token")}
    wrapped: Any = RequestMiddleware(
        app,
        max_body_bytes=lambda: 1000,
        logged_paths=("/api", "/admin"),
        guards=guarded,
        json_paths=("/api", "/guarded"),
        max_values={"/api": lambda: 10},
    )
    return TestClient(wrapped)


def test_a_guarded_path_refuses_before_reading_the_body() -> None:
    with client() as http:
        refused = http.post("/guarded", content=b"{}", headers={"Content-Type": "application/json"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == [{"error": "authorization: send the token"}]
        assert http.post("/guarded", content=b"{}", headers={"Authorization": "Bearer ok"}).status_code == 200


def test_only_json_reaches_the_api() -> None:
    with client() as http:
        assert http.post("/api", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
        assert http.post("/api", content=b"{}", headers={"Content-Type": "multipart/form-data"}).status_code == 415
        assert http.post("/api", content=b"{}").status_code == 200  # no media type: JSON, as in BentoML
        assert http.post("/api", content=b"{}", headers={"Content-Type": "application/problem+json"}).status_code == 200


def test_bodies_over_the_limits_are_refused_unparsed() -> None:
    with client() as http:
        too_large = http.post("/api", content=b"[" + b" " * 2000 + b"]")
        assert too_large.status_code == 413
        assert "1000 bytes" in too_large.text
        too_many = http.post("/api", content=json.dumps([1] * 20).encode())
        assert too_many.status_code == 413
        assert "20 JSON values, more than the 11" in too_many.text
        assert http.post("/api", content=json.dumps([1] * 11).encode()).status_code == 200


def test_a_long_error_is_capped_and_keeps_its_length_header() -> None:
    with client() as http:
        answer = http.post("/api", content=b"bad")
    assert answer.status_code == 400
    assert len(answer.content) <= MAX_ERROR_BYTES
    assert int(answer.headers["content-length"]) == len(answer.content)
    body = answer.json()
    assert (len(body["detail"]), body["more_errors"]) == (MAX_ERRORS, 1000 - MAX_ERRORS)


def test_request_ids_are_the_servers_own_with_a_clients_id_kept_for_correlation() -> None:
    with client() as http:
        kept = http.post("/api", content=b"{}", headers={"X-Request-ID": "abc-1"})
        again = http.post("/api", content=b"{}", headers={"X-Request-ID": "abc-1"})
        made = http.post("/api", content=b"{}", headers={"X-Request-ID": "not valid!"})
    assert kept.headers["x-request-id"] == kept.json()["id"]
    assert re.fullmatch(r"abc-1~[0-9a-f]{16}", kept.json()["id"])
    assert again.json()["id"] != kept.json()["id"]  # the same client id twice: two ids, neither can take the other's
    assert made.headers["x-request-id"] == made.json()["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made.json()["id"])


def record(i: int) -> logging.LogRecord:
    line = logging.LogRecord("housing.requests", logging.INFO, __file__, 0, "request", None, None)
    line.fields = {"request_id": f"r{i}", "path": "/predict"}  # type: ignore[attr-defined]
    return line


def test_request_lines_are_written_in_blocks_and_rotate_at_their_size(tmp_path: Path) -> None:
    rotating = logging.handlers.RotatingFileHandler(tmp_path / "requests.log", maxBytes=2_000, backupCount=2)
    stdout = logging.StreamHandler(io.StringIO())
    for target in (rotating, stdout):
        target.setFormatter(JsonFormatter())
    handler = BackgroundHandler([rotating, stdout], interval_s=3600)  # only explicit flushes write
    for batch in range(6):
        for i in range(batch * 10, batch * 10 + 10):
            handler.handle(record(i))
        handler.flush()
    handler.close()
    files = [tmp_path / name for name in ("requests.log.2", "requests.log.1", "requests.log")]
    lines = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    # The rotation kept every line of the newest blocks, in order; no file grew past its size.
    assert [line["request_id"] for line in lines] == [f"r{i}" for i in range(60 - len(lines), 60)]
    assert all(path.stat().st_size < 2_000 for path in files)
    assert len(lines) >= 30
    written = stdout.stream.getvalue().splitlines()
    assert [json.loads(line)["request_id"] for line in written] == [f"r{i}" for i in range(60)]


def test_a_client_gone_before_its_body_still_gets_an_answer_that_releases_the_request() -> None:
    """BentoML's timeout middleware waits for the first message sent; without one, the request (and a graceful
    shutdown behind it) would wait the whole server timeout for a client that hung up."""
    sent: list[dict[str, Any]] = []

    async def hung_up() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = Starlette(routes=[Route("/api", echo, methods=["POST"])])
    wrapped = RequestMiddleware(app, max_body_bytes=lambda: 1000, logged_paths=("/api",))
    scope = {"type": "http", "method": "POST", "path": "/api", "headers": [], "query_string": b""}
    asyncio.run(wrapped(scope, hung_up, send))
    assert [message.get("status") for message in sent if message["type"] == "http.response.start"] == [408]
