"""Request plumbing: request ids, the body-size limit and one JSON log line per API request.

:class:`RequestMiddleware` is a plain ASGI middleware (no extra task per
request). It takes the ``X-Request-ID`` header or makes one, hands it to the
API through the request headers, returns it on every response, refuses
requests to guarded paths without their token (401/403), bodies that are not
JSON (415) and bodies larger than the limit (413) before anything parses them,
and writes one
JSON line per API or admin request with the status and latency. The API
handlers add their own fields (model version, record count) through the request
state. A validation error answer is capped (:func:`capped_error`): a body with
thousands of bad values gets the first few errors and a count of the rest.
Lines are formatted and written by a background thread (:class:`BackgroundHandler`).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, cast

from service.prometheus_metrics import VALIDATION_FAILURES, failed_fields

log = logging.getLogger("housing.requests")

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
STATE_KEY = "housing"
# A guard gets a request's Authorization header: None to let it in, else (status, why not).
Guard = Callable[[str | None], "tuple[int, str] | None"]
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
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.logged_paths = logged_paths
        self.guards = dict(guards or {})
        self.json_paths = json_paths
        self.max_values = dict(max_values or {})

    def _logged(self, path: str) -> bool:
        """Paths in ``logged_paths``, and the paths below them (``/admin`` covers ``/admin/reload``)."""
        return any(path == logged or path.startswith(logged + "/") for logged in self.logged_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self._request_id(scope)
        fields: dict[str, Any] = {"request_id": request_id, "start": start}
        scope.setdefault("state", {})[STATE_KEY] = fields
        status = 500
        error_body = bytearray()
        held: dict[str, Any] = {}

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
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
            if refusal is not None:
                await _error(send_with_id, refusal[0], refusal[1])
            elif scope["path"] in self.json_paths and not _is_json(media_type):
                await _error(send_with_id, 415, f"content-type: send application/json, not {media_type!r}")
            elif (body := await self._read_body(receive)) is None:
                await _error(send_with_id, 413, f"request body exceeds the limit of {self.max_body_bytes()} bytes")
            elif (too_many := self._too_many_values(scope["path"], body)) is not None:
                await _error(send_with_id, 413, too_many)
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            if self._logged(scope["path"]):
                self._log(scope, fields, status, start)
                for field in failed_fields(bytes(error_body)) if status == 400 else []:
                    VALIDATION_FAILURES.labels(scope["path"], field).inc()

    def _request_id(self, scope: dict[str, Any]) -> str:
        headers = [(k, v) for k, v in scope["headers"] if k != REQUEST_ID_HEADER]
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), b"")
        request_id = given.decode() if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        # The API reads the id from the header, so an invalid or missing one is replaced here.
        scope["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
        return request_id

    def _too_many_values(self, path: str, body: bytes) -> str | None:
        """Why ``body`` holds more JSON values than the largest legal request to ``path`` (None if it does not).

        Parsing is what costs: five megabytes of ``[1,1,…]`` or of unknown keys take longer to parse than
        the largest legal batch takes to price. Commas separate every value, and counting them costs a
        millisecond, so a body with more of them than a legal one can have is refused unparsed.
        """
        budget = self.max_values.get(path)
        if budget is None or (commas := body.count(b",")) <= (most := budget()):
            return None
        return f"request body: {commas + 1} JSON values, more than the {most + 1} the largest legal request holds"

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole body, or None once it grows past the limit (whatever Content-Length claimed)."""
        chunks, size, more, limit = [], 0, True, self.max_body_bytes()
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
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
        detail = json.loads(body).get("detail", [])
    except (ValueError, AttributeError, RecursionError):
        detail = None
    if not isinstance(detail, list):
        return json.dumps({"error": "invalid request body", "detail": []}).encode()
    kept = [_short_error(item) for item in detail[:MAX_ERRORS] if isinstance(item, dict)]
    more = len(detail) - len(kept)
    summary = f"{len(detail)} validation errors; the first {len(kept)} are in detail, {more} more not shown"
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
