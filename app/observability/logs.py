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
import time
from typing import Any, TextIO

import orjson

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
        fields = record.__dict__.get(FIELDS)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


_handler: logging.Handler | None = None


def configure_logging(level: str) -> None:
    """JSON lines on stderr for every logger, at `level` (LOG_LEVEL). Safe to call again."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = _StderrHandler()
        _handler.setFormatter(JsonFormatter())
        root.addHandler(_handler)
    root.setLevel(level.upper())
    # uvicorn set up its own text handlers before loading the app: route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
