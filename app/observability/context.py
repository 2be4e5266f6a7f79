"""The request being served: its id and, once a token is read, its user id.

The id comes from a well-formed `X-Request-ID` (the same rule nginx applies) or is made
here. It rides in a contextvar, so every log line written while serving the request carries
it, and other features read it to pass it on: `job_fields()` for job payloads,
`request_id_headers()` for webhooks and other outbound HTTP calls, and `bound()` to restore it
where the work continues (a job worker).
"""

import itertools
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-ID"
# Same rule as deploy/stack/nginx.conf: anything else is replaced, never echoed.
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


# The deepest tier a request waited on, in order (conduit_http_requests_by_tier_total):
# none, the worker's own memory (L1), Redis, PostgreSQL (a pooled connection checked out).
TIERS = ("none", "local", "redis", "database")
LOCAL, REDIS, DATABASE = 1, 2, 3


@dataclass(slots=True)
class RequestContext:
    request_id: str
    user_id: int | None = None
    tier: int = 0  # an index into TIERS


_current: ContextVar[RequestContext | None] = ContextVar("conduit_request", default=None)


def new_request_id() -> str:
    """32 hex characters, like nginx's $request_id: a random prefix per process and a counter,
    unique without asking the OS for randomness on every request."""
    return f"{_prefix}{next(_sequence):016x}"


def _new_process() -> None:
    global _prefix, _sequence
    _prefix, _sequence = secrets.token_hex(8), itertools.count()


_prefix, _sequence = "", itertools.count()
_new_process()
os.register_at_fork(after_in_child=_new_process)


def accept_request_id(raw: bytes | None) -> str:
    """The client's id if it is well formed (1-128 of [A-Za-z0-9._:-]), else a new one."""
    if raw is not None and _WELL_FORMED.fullmatch(raw):
        return raw.decode("ascii")
    return new_request_id()


def current() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return None if context is None else context.request_id


def set_user_id(user_id: int) -> None:
    """Record the authenticated user for this request's log line (called where a token is read)."""
    context = _current.get()
    if context is not None:
        context.user_id = user_id


def reached(tier: int) -> None:
    """The request being served waited on `tier` (LOCAL, REDIS or DATABASE)."""
    context = _current.get()
    if context is not None and tier > context.tier:
        context.tier = tier


def request_id_headers() -> dict[str, str]:
    """`X-Request-ID` for a response, or for an outbound call made for this request (webhooks)."""
    request_id = current_request_id()
    return {} if request_id is None else {REQUEST_ID_HEADER: request_id}


def job_fields() -> dict[str, str]:
    """Fields to put in a job's payload so the job's log lines carry the request's id."""
    request_id = current_request_id()
    return {} if request_id is None else {"request_id": request_id}


@contextmanager
def bound(request_id: str | None, user_id: int | None = None) -> Iterator[RequestContext]:
    """Serve work (a job) under a request id: the given one, or a new one."""
    context = RequestContext(request_id or new_request_id(), user_id)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def enter(context: RequestContext) -> Token[RequestContext | None]:
    """Make `context` current (the middleware, once per request); `leave` undoes it."""
    return _current.set(context)


def leave(token: Token[RequestContext | None]) -> None:
    _current.reset(token)
