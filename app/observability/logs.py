"""JSON log lines: one object per line on stderr, every logger of the process included.

stdlib logging with a small orjson formatter rather than structlog or python-json-logger:
uvicorn, SQLAlchemy, redis and our own code all log through stdlib `logging`, so one root
handler formats everything alike without a bridge; orjson is already a dependency and
serialises a line in about a microsecond, which matters for a line per request. The fields
of the request being served (request id, user id) are added to every line from the
contextvar, so no call site passes them.

    {"ts": "2026-11-23T18:00:00.123Z", "level": "info", "logger": "conduit.access",
     "msg": "request", "request_id": "3f2a…", "user_id": 7, "method": "GET",
     "route": "/api/articles/{slug}", "status": 200, "duration_ms": 3.1}
"""

import logging
import sys
import threading
import time
from typing import Any

import orjson
from opentelemetry import trace

from app.observability import context

# Fields passed as `extra={"fields": {...}}` are merged into the line.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (request := context.current()) is not None:
            line["request_id"] = request.request_id
            if request.user_id is not None:
                line["user_id"] = request.user_id
        if _with_trace_ids:
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                line["trace_id"] = f"{span.trace_id:032x}"
                line["span_id"] = f"{span.span_id:016x}"
        fields = record.__dict__.get(FIELDS)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


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
    """Lines to whatever sys.stderr is at the time (test runners swap it), written in batches.

    A write and flush per line costs about as much as everything else the access log does, so
    lines are gathered and written together, like nginx's `access_log ... buffer=64k flush=2s`:
    when 64 KiB are waiting, every FLUSH_INTERVAL_S (a daemon thread), at exit, and at once
    for warnings and errors. Lines are whole in each write, so workers sharing one log file
    never interleave within a line. A worker killed outright loses at most the last interval.
    """

    FLUSH_INTERVAL_S = 0.5
    MAX_PENDING = 64 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._size = 0
        self._flusher = threading.Thread(target=self._flush_periodically, daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= self.MAX_PENDING or record.levelno >= logging.WARNING:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if not self._pending:
            return
        text, self._pending, self._size = "".join(self._pending), [], 0
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed (shutdown, test capture ended)
            pass

    def _flush_periodically(self) -> None:
        while True:
            time.sleep(self.FLUSH_INTERVAL_S)
            self.flush()


_handler: logging.Handler | None = None
# Loggers LOG_LEVEL applies to; everything else (libraries) logs warnings and above, so a
# library's INFO chatter (httpx logs every request) never floods the request lines.
OWN_LOGGERS = ("conduit", "uvicorn", "uvicorn.error", "uvicorn.access")


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
