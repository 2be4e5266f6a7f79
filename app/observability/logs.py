"""JSON log lines: one object per line on stderr, every logger of the process included.

stdlib logging with a small orjson formatter rather than structlog or python-json-logger:
uvicorn, SQLAlchemy, redis and our own code all log through stdlib `logging`, so one root
handler formats everything alike without a bridge; orjson is already a dependency and
serialises a line in about a microsecond, which matters for a line per request. The fields
of the request being served (request id, user id) are added to every line from the
contextvar, so no call site passes them.

The access line (`access()`, one per request) takes a shorter road: the middleware hands the
handler a tuple and the handler formats it when it writes its batch, with no LogRecord and
no handler dispatch on the request's path. It still honours LOG_LEVEL (INFO) and shares the
stream, order and format of every other line.

    {"ts": "2026-11-23T18:00:00.123Z", "level": "info", "logger": "conduit.access",
     "msg": "request", "request_id": "3f2a…", "user_id": 7, "method": "GET",
     "route": "/api/articles/{slug}", "status": 200, "duration_ms": 3.1}
"""

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from opentelemetry import trace

from app.observability import context, jsonline

# Fields passed as `extra={"fields": {...}}` are merged into the line.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        try:
            line["msg"] = record.getMessage()
            line.update(_request_fields())
            fields = record.__dict__.get(FIELDS)
            if fields:
                line.update(fields)
            if record.exc_info:
                line["exc"] = self.formatException(record.exc_info)
            elif record.exc_text:
                line["exc"] = record.exc_text
        except Exception as exc:  # a bad format string or fields: the record still gets a line
            line["msg"] = f"unformattable log record ({type(exc).__name__})"
            line["template"] = record.msg
        return jsonline.dumps(line)


def _request_fields() -> dict[str, Any]:
    """The request's id and user, and the current span's ids when tracing is on."""
    fields: dict[str, Any] = {}
    if (request := context.current()) is not None:
        fields["request_id"] = request.request_id
        if request.user_id is not None:
            fields["user_id"] = request.user_id
    if _with_trace_ids:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = f"{span.trace_id:032x}"
            fields["span_id"] = f"{span.span_id:016x}"
    return fields


# An access line waiting to be formatted: (time, request fields, method, route, status, ms).
AccessEntry = tuple[float, dict[str, Any], str, str, int, float]


def _access_json(entry: AccessEntry) -> str:
    created, request, method, route, status, duration_ms = entry
    line = {
        "ts": _timestamp(created),
        "level": "info",
        "logger": ACCESS_LOGGER,
        "msg": "request",
        **request,
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
    }
    return jsonline.dumps(line)


_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


_with_trace_ids = False


def include_trace_ids() -> None:
    """Tracing is on: lines written inside a span carry its trace and span ids."""
    global _with_trace_ids
    _with_trace_ids = True


class BufferedStderrHandler(logging.Handler):
    """Lines to sys.stderr as it was when the batch began (test runners swap it), in batches.

    A write and flush per line costs about as much as everything else the access log does, so
    lines are gathered and written together, like nginx's `access_log ... buffer=64k flush=2s`:
    when MAX_PENDING lines wait, every FLUSH_INTERVAL_S (a daemon thread), at exit, and at once
    for warnings and errors. Lines are whole in each write, so workers sharing one log file
    never interleave within a line. A worker killed outright loses at most the last interval.
    """

    FLUSH_INTERVAL_S = 0.5
    MAX_PENDING = 500  # lines, some 100 KiB

    def __init__(self) -> None:
        super().__init__()
        # Appended from the event loop without the lock, emptied by whoever writes: a deque's
        # append and popleft are atomic, so no line is lost between them.
        self._pending: deque[str | AccessEntry] = deque()
        self._stream: TextIO | None = None
        self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._enqueue(self.format(record))
            if len(self._pending) >= self.MAX_PENDING or record.levelno >= logging.WARNING:
                self._write()
        except Exception:  # never into the code that logged
            self.handleError(record)

    def add_access(self, entry: AccessEntry) -> None:
        self._enqueue(entry)
        if len(self._pending) >= self.MAX_PENDING:
            self.flush()

    def _enqueue(self, item: str | AccessEntry) -> None:
        if self._stream is None:
            self._stream = sys.stderr
        self._pending.append(item)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        lines = []
        while self._pending:
            item = self._pending.popleft()
            lines.append(item if isinstance(item, str) else _access_json(item))
        stream, self._stream = self._stream or sys.stderr, None
        if not lines:
            return
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed (shutdown, test capture ended)
            pass

    def _flush_periodically(self) -> None:
        # This thread is the only writer of INFO lines between warnings: whatever one batch
        # raises, the next interval writes again (a dead flusher silences every worker's
        # access log until the next warning).
        while True:
            time.sleep(self.FLUSH_INTERVAL_S)
            with contextlib.suppress(Exception):  # nowhere to report it but this very log
                self.flush()


_handler: BufferedStderrHandler | None = None
ACCESS_LOGGER = "conduit.access"
_access_logger = logging.getLogger(ACCESS_LOGGER)
# Loggers LOG_LEVEL applies to; everything else (libraries) logs warnings and above, so a
# library's INFO chatter (httpx logs every request) never floods the request lines.
OWN_LOGGERS = ("conduit", "uvicorn", "uvicorn.error", "uvicorn.access")


def access(method: str, route: str, status: int, seconds: float) -> None:
    """The request's access line, at INFO on `conduit.access`."""
    if not _access_logger.isEnabledFor(logging.INFO):
        return
    duration_ms = round(seconds * 1000, 2)
    if _handler is None:  # logging not configured by us: the ordinary road
        fields = {"method": method, "route": route, "status": status, "duration_ms": duration_ms}
        _access_logger.info("request", extra={FIELDS: fields})
        return
    _handler.add_access((time.time(), _request_fields(), method, route, status, duration_ms))


def flush() -> None:
    """Write out the lines waiting in the buffer (tests; a process about to exit)."""
    if _handler is not None:
        _handler.flush()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for every logger, ours at `level` (LOG_LEVEL). Safe to call again."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = BufferedStderrHandler()
        _handler.setFormatter(JsonFormatter())
        root.addHandler(_handler)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"LOG_LEVEL={level!r} is not a logging level")
    root.setLevel(max(numeric, logging.WARNING))
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(numeric)
        # uvicorn set up its own text handlers before it loaded the app: use ours instead.
        # A logger it left without handlers stays as it is (--no-access-log does that, and
        # uvicorn decides whether to log access lines by whether any handler would get them).
        if logger.handlers:
            logger.handlers.clear()
            logger.propagate = True
