"""One pure ASGI middleware that observes each request: its id, its metrics, its log line.

One layer rather than three: a single `send` wrapper and a single clock read per request; the
metrics are tallied in plain Python (recorder.py) and the log line is formatted later, in a
batch (logs.py), so the request pays a few microseconds (docs/ARCHITECTURE.md "Observability"). It also answers
GET /metrics itself, before any inner middleware, so a scrape is never rate limited, shed or
counted as API traffic.
"""

from time import perf_counter

import anyio
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import context, logs, metrics, recorder
from app.observability.routes import RouteTemplates

METRICS_PATH = "/metrics"
_REQUEST_ID = b"x-request-id"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's code for "client closed the request": the work was cancelled, nobody got an answer,
# and it is not the server's error (a 500 would count in every 5xx alert).
CLIENT_GONE = 499


class ObserveRequests:
    """Request id in and out, `conduit_http_*` metrics, one `conduit.access` JSON line."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, metrics: bool, access_log: bool) -> None:
        self.app = app
        self.routes = RouteTemplates(fastapi)
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics and scope["path"] == METRICS_PATH and scope["method"] == "GET":
            await _serve_metrics(send)
            return
        request_id = _request_id(scope)
        token = context.enter(context.RequestContext(request_id))
        header = (_REQUEST_ID, request_id.encode())
        status = 500  # no response started: the client saw nothing, or an error page
        started_response = gone = False

        async def receive_watching() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        if self.metrics:
            recorder.HTTP.started()
        started = perf_counter()
        failed = True
        try:
            await self.app(scope, receive_watching, send_with_id)
            failed = False
        finally:
            seconds = perf_counter() - started
            if gone and not started_response and not failed:  # cancelled, nobody to answer
                status = CLIENT_GONE
            if self.metrics or self.access_log:
                self._record(scope, status, seconds, failed)
            # On an unhandled exception the context stays: Starlette's outer error handler
            # renders the 500 after this returns, and its log line and X-Request-ID need it.
            if not failed:
                context.leave(token)

    def _record(self, scope: Scope, status: int, seconds: float, failed: bool) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = self.routes(scope)
        if self.metrics:
            recorder.HTTP.finished(method, route, status, seconds, failed)
        if self.access_log:
            logs.access(method, route, status, seconds)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            return context.accept_request_id(value)
    return context.new_request_id()


async def _serve_metrics(send: Send) -> None:
    recorder.HTTP.flush()  # this process's latest tallies, at least
    # Reading every worker's files is blocking I/O: off the event loop.
    body = await anyio.to_thread.run_sync(metrics.exposition)
    headers = [
        (b"content-type", metrics.CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
