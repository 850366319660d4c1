"""Request plumbing: request ids, body limits, the concurrency bound, page headers and one JSON log line per request.

:class:`RequestMiddleware` is a plain ASGI middleware (no extra task per request). It gives every request
an id of the server's making (a client's ``X-Request-ID``, kept for correlation, with a random suffix: no
client can choose the id that another's rows, and so its feedback, are stored under), hands it to the API
through the request headers and returns it on every response. Before anything parses a body it refuses
requests to guarded paths without their token (401/403), bodies that are not JSON (415), larger than the
limit (413) or not in full within the read timeout (408); only then does a request take one of the worker's
concurrency slots (429 past them), so a slow client costs a socket, not a slot. Every HTML page gets
security headers (no framing, no sniffing, a content security policy). It writes one
JSON line per API or admin request with the status and latency. The API
handlers add their own fields (model version, record count) through the request
state. A validation error answer is capped (:func:`capped_error`): a body with
thousands of bad values gets the first few errors and a count of the rest.
Lines are formatted and written by a background thread (:class:`BackgroundHandler`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from service.prometheus_metrics import ABANDONED_REQUESTS, VALIDATION_FAILURES, failed_fields

log = logging.getLogger("housing.requests")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
STATE_KEY = "housing"
# A guard gets a request's Authorization header: None to let it in, else (status, why not).
Guard = Callable[[str | None], "tuple[int, str] | None"]
# The API's paths, the only values of a metric's path label besides "other".
KNOWN_PATHS = frozenset({"/predict", "/predict_batch", "/predict_columns", "/invocations", "/feedback", "/explain"})
# Paths that never wait for a concurrency slot: a probe or a scrape must answer while the worker is busy.
UNBOUNDED_PATHS = frozenset({"/metrics", "/healthz", "/livez", "/readyz"})
# Every HTML page: no framing (clickjacking through Swagger's "Try it out"), no type sniffing, and only the
# page's own origin for scripts, styles and calls (the pages carry inline scripts and styles of their own).
PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
     b"'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
     b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip
# An error answer names this many errors at most and is never larger than MAX_ERROR_BYTES.
MAX_ERRORS = 10
MAX_ERROR_BYTES = 64 * 1024
_MAX_INPUT_CHARS = 200


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``fields`` given."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(payload, default=str)


class BackgroundHandler(logging.Handler):
    """Collects records on the request path; a daemon thread writes them to ``targets`` every ``interval_s``.

    Formatting the JSON line, writing it and the rotating handler's checks cost 6%
    of a prediction's time when done in the request; appending the record to a
    deque costs next to nothing. The thread writes each batch as one block
    (:func:`write_block`), and polls rather than being woken, for the reason
    housing.log.writer gives. :meth:`close` writes what is left.
    """

    def __init__(self, targets: list[logging.Handler], interval_s: float = 0.1):
        super().__init__()
        self.targets = targets
        self.interval_s = interval_s
        self._records: deque[logging.LogRecord] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # deque.append is atomic: no handler lock on the request path.
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)

    def flush(self) -> None:
        """Write every collected record now."""
        records = [self._records.popleft() for _ in range(len(self._records))]
        for target in self.targets:
            if records:
                write_block(target, records)
            target.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.flush()
        for target in self.targets:
            target.close()
        super().close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()


def write_block(target: logging.Handler, records: list[logging.LogRecord]) -> None:
    """Write ``records`` to a stream or file handler as one block: one write, one flush, at most one rotation.

    Handled one at a time, each line would cost a flush and, on a rotating file, two
    ``stat`` calls: more than formatting it. A rotating file rotates before a block
    that would take it to ``maxBytes``, as it does before such a line. Other handlers
    get the records one by one.
    """
    if not isinstance(target, logging.StreamHandler):
        for record in records:
            target.handle(record)
        return
    target.acquire()
    try:
        text = "".join(target.format(record) + target.terminator for record in records)
        if isinstance(target, logging.FileHandler) and target.stream is None:  # opened lazily, or closed by a failure
            target.stream = target._open()
        stream = cast(IO[str], target.stream)
        if isinstance(target, logging.handlers.RotatingFileHandler) and _full(target, stream, len(text)):
            target.doRollover()
            stream = cast(IO[str], target.stream)
        stream.write(text)
        stream.flush()
    except Exception:  # a log line must never take the writer thread down: report it as logging does
        target.handleError(records[0])
    finally:
        target.release()


def _full(target: logging.handlers.RotatingFileHandler, stream: IO[str], size: int) -> bool:
    position = stream.tell()
    return target.maxBytes > 0 and position > 0 and position + size >= target.maxBytes


def configure_request_log(log_dir: Path, worker: int | None, max_bytes: int, backups: int, stdout: bool) -> None:
    """Send request lines to a rotating file per worker (rotation is not safe across processes)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"requests-{worker}.log" if worker else "requests.log"
    targets: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(log_dir / name, maxBytes=max_bytes, backupCount=backups)
    ]
    if stdout:
        targets.append(logging.StreamHandler())
    for target in targets:
        target.setFormatter(JsonFormatter())
    close_request_log()
    log.addHandler(BackgroundHandler(targets))
    log.setLevel(logging.INFO)
    log.propagate = False


def close_request_log() -> None:
    """Write the request lines still collected and close the files."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def request_state(scope_state: Any) -> dict[str, Any]:
    """The per-request dict the middleware shares with the API handlers."""
    return getattr(scope_state, STATE_KEY)


class RequestMiddleware:
    """Request ids, body-size limit and JSON request log for the API routes."""

    def __init__(
        self,
        app: Any,
        max_body_bytes: Callable[[], int],
        logged_paths: tuple[str, ...],
        guards: Mapping[str, Guard] | None = None,
        json_paths: tuple[str, ...] = (),
        max_values: Mapping[str, Callable[[], int]] | None = None,
        body_timeout_s: Callable[[], float] = lambda: 5.0,
        max_concurrency: Callable[[], int] = lambda: 128,
        limits: Mapping[str, Callable[[], str]] | None = None,
        unavailable: Mapping[str, Callable[[], str | None]] | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.logged_paths = logged_paths
        self.guards = dict(guards or {})
        self.json_paths = json_paths
        self.max_values = dict(max_values or {})
        self.body_timeout_s = body_timeout_s
        self.max_concurrency = max_concurrency
        self.limits = dict(limits or {})
        self.unavailable = dict(unavailable or {})
        self._slots: asyncio.Semaphore | None = None

    def _logged(self, path: str) -> bool:
        """Paths in ``logged_paths``, and the paths below them (``/admin`` covers ``/admin/reload``)."""
        return any(path == logged or path.startswith(logged + "/") for logged in self.logged_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id, client_id = self._request_id(scope)
        fields: dict[str, Any] = {"request_id": request_id, "start": start}
        if client_id is not None:
            fields["client_request_id"] = client_id
        scope.setdefault("state", {})[STATE_KEY] = fields
        status = 500
        error_body = bytearray()
        held: dict[str, Any] = {}

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
                message["headers"] = headers + PAGE_HEADERS if _is_page(headers) else headers
                if status == 400:  # held until the whole error is known, so that it can be capped
                    held.update(message)
                    return
            elif held:
                error_body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                error_body = bytearray(capped_error(bytes(error_body)))
                headers = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
                await send({**held, "headers": [*headers, (b"content-length", str(len(error_body)).encode())]})
                message = {"type": "http.response.body", "body": bytes(error_body)}
            await send(message)

        try:
            guard = self.guards.get(scope["path"])
            refusal = guard(_header(scope, b"authorization")) if guard else None
            media_type = (_header(scope, b"content-type") or "application/json").split(";")[0].strip().lower()
            why_not = (check := self.unavailable.get(scope["path"])) and check()
            if refusal is not None:
                await _error(send_with_id, refusal[0], refusal[1])
            elif why_not:
                await _error(send_with_id, 503, why_not)
            elif scope["path"] in self.json_paths and not _is_json(media_type):
                await _error(send_with_id, 415, f"content-type: send application/json, not {media_type!r}")
            elif isinstance(body := await self._read_body(receive), _Unread):
                await self._unread(body, scope["path"], send_with_id)
            elif (too_many := self._too_many_values(scope["path"], body)) is not None:
                await _error(send_with_id, 413, too_many)
            else:
                await self._in_a_slot(scope, _replay(body, receive), send_with_id)
        finally:
            if self._logged(scope["path"]):
                self._log(scope, fields, status, start)
                for field in failed_fields(bytes(error_body)) if status == 400 else []:
                    VALIDATION_FAILURES.labels(scope["path"], field).inc()

    def _request_id(self, scope: dict[str, Any]) -> tuple[str, str | None]:
        """The request's id and the id its client asked for (None: none, or not a valid one).

        A client's id gets 64 random bits after a ``~``: whatever id a client sends, the id its rows are
        stored under (and that feedback names) is one nobody else can send first.
        """
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_ID_HEADER]
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), b"")
        client_id = given.decode() if _VALID_REQUEST_ID.match(given) else None
        request_id = f"{client_id}~{secrets.token_hex(8)}" if client_id else uuid.uuid4().hex
        # The API reads the id from the header.
        scope["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
        return request_id, client_id

    async def _in_a_slot(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the request in one of the worker's ``max_concurrency`` slots, or answer 429 when none is free."""
        if scope["path"] in UNBOUNDED_PATHS:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made in the worker's own event loop
            self._slots = asyncio.Semaphore(self.max_concurrency())
        if self._slots.locked():
            await _error(send, 429, "too many requests at once on this worker; retry")
            return
        async with self._slots:
            await self.app(scope, receive, send)

    @staticmethod
    async def _unread(body: _Unread, path: str, send: Any) -> None:
        """The answer to a body that was never read in full: too large (413), too slow (408), or its client gone (408
        too, as for an explanation whose client hung up: the request log says so)."""
        if body.reason == "gone":
            ABANDONED_REQUESTS.labels(_known_path(path), "client_gone").inc()
            # Nobody reads it (the server drops it), but an answer must be sent: BentoML's timeout middleware
            # otherwise holds the request for its whole timeout, and a graceful shutdown waits on it.
            await _error(send, 408, "the client closed the connection before its request arrived in full")
        elif body.reason == "slow":
            ABANDONED_REQUESTS.labels(_known_path(path), "body_timeout").inc()
            await _error(send, 408, f"request body: not received in full within {body.limit:g} s")
        else:
            await _error(send, 413, f"request body exceeds the limit of {body.limit:.0f} bytes")

    def _too_many_values(self, path: str, body: bytes) -> str | None:
        """Why ``body`` holds more JSON values than the largest legal request to ``path`` (None if it does not).

        Parsing is what costs: five megabytes of ``[1,1,…]`` or of unknown keys take longer to parse than
        the largest legal batch takes to price. Commas separate every value, and counting them costs a
        millisecond, so a body with more of them than a legal one can have is refused unparsed.
        """
        budget = self.max_values.get(path)
        if budget is None or (commas := body.count(b",")) <= (most := budget()):
            return None
        limit = f" ({what()})" if (what := self.limits.get(path)) else ""
        return (
            f"request body: {commas + 1} JSON values, more than the {most + 1} the largest legal request holds{limit}"
        )

    async def _read_body(self, receive: Any) -> bytes | _Unread:
        """The whole body; or why not: it grew past the limit (whatever Content-Length claimed), it did not arrive
        within the read timeout, or the client went away."""
        chunks, size, more, limit, timeout_s = [], 0, True, self.max_body_bytes(), self.body_timeout_s()
        deadline = time.monotonic() + timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return _Unread("slow", timeout_s)
            if message["type"] == "http.disconnect":
                return _Unread("gone", 0)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return _Unread("large", limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    @staticmethod
    def _log(scope: dict[str, Any], fields: dict[str, Any], status: int, start: float) -> None:
        extra = {key: value for key, value in fields.items() if key != "start"}
        extra |= {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        log.info("request", extra={"fields": extra})


@dataclass(frozen=True)
class _Unread:
    """A body that was not read in full: ``reason`` is ``large`` (over ``limit`` bytes), ``slow`` (not within
    ``limit`` seconds) or ``gone`` (the client hung up)."""

    reason: str
    limit: float


def _is_page(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.lower().startswith(b"text/html") for k, v in headers)


def _known_path(path: str) -> str:
    """``path`` as a metric label: one of the API's paths, else ``other`` (a client must not grow the label set)."""
    return path if path in KNOWN_PATHS else "other"


def _is_json(media_type: str) -> bool:
    """JSON, or a JSON-based type (``application/problem+json``); a missing type counts as JSON, as in BentoML."""
    return media_type == "application/json" or media_type.endswith("+json")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    value = next((v for k, v in scope["headers"] if k == name), None)
    return value.decode("latin-1") if value is not None else None


async def _error(send: Any, status: int, message: str) -> None:
    """An error answer in BentoML's shape for 4xx (a list of one ``{"error": ...}``)."""
    body = json.dumps([{"error": message}]).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    elif status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def capped_error(body: bytes) -> bytes:
    """A 400 answer cut to its first ``MAX_ERRORS`` errors and ``MAX_ERROR_BYTES``, saying how many more there were.

    BentoML puts every validation error, with the offending input, into the
    answer: a large body full of bad values would otherwise come back tens of
    megabytes long. Small answers pass unchanged.
    """
    if len(body) <= MAX_ERROR_BYTES and body.count(b'"loc"') <= MAX_ERRORS:
        return body
    try:
        payload = json.loads(body)
        detail, error = payload.get("detail", []), payload.get("error")
    except (ValueError, AttributeError, RecursionError):
        detail = error = None
    if not isinstance(detail, list):
        return json.dumps({"error": "invalid request body", "detail": []}).encode()
    kept = [_short_error(item) for item in detail[:MAX_ERRORS] if isinstance(item, dict)]
    more = len(detail) - len(kept)
    # BentoML's summary names the request model ("12 validation errors for House"): it is kept.
    counted = error if isinstance(error, str) and len(error) <= 200 else f"{len(detail)} validation errors"
    summary = f"{counted}; the first {len(kept)} are in detail, {more} more not shown"
    capped = json.dumps({"error": summary, "detail": kept, "more_errors": more}, default=str).encode()
    return capped if len(capped) <= MAX_ERROR_BYTES else json.dumps({"error": summary, "detail": []}).encode()


def _short_error(item: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error with its echoed input cut short."""
    short: dict[str, Any] = {key: item[key] for key in ("type", "loc", "msg") if key in item}
    if "input" in item:
        text = item["input"] if isinstance(item["input"], str) else json.dumps(item["input"], default=str)
        short["input"] = text if len(text) <= _MAX_INPUT_CHARS else text[:_MAX_INPUT_CHARS] + "…"
    return short


def _replay(body: bytes, receive: Any) -> Any:
    """A receive callable that hands over the buffered body, then waits on the real connection."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
