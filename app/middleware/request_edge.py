"""The request edge: one pure ASGI layer between the server and the app.

For each HTTP request, in this order:

1. CORS (Starlette's, only for requests with an `Origin`: browsers). Preflights are answered
   there; other responses get their CORS headers. Requests without `Origin` (servers, curl,
   load tests: most traffic) only get `Vary: Origin`, so a shared cache keeps them apart.
2. Observation: the request id in and out, the `conduit_http_*` metrics, the access log line
   (app/observability). GET /metrics is answered here, so a scrape is never limited, shed or
   counted as traffic; so are the liveness probes (/livez, /healthz), which need nothing
   but a turning event loop.
3. Size limits: request line and headers over MAX_HEADER_BYTES get 431, a body over
   MAX_BODY_BYTES 413, before anything reads them. The body is read here (up to the limit)
   and handed to the app as one message, so a chunked body cannot slip past. Streamed uploads
   (`streamed` paths, POST: bulk imports) pass through as they arrive, counted against their
   own limit, never buffered.
4. Admission (admission.py): MAX_IN_FLIGHT requests are worked on at once; the others wait
   in a bounded line if the wait it predicts fits their budget, else 503 with a Retry-After
   from the line's drain time, without any work.
5. The deadline (REQUEST_DEADLINE_S), counted from when nginx handed the request on
   (`X-Request-Start: t=<epoch seconds>`), so time spent waiting is spent budget: past it the
   work is cancelled (psycopg cancels the running statement, the transaction rolls back) and
   the client gets 504 at once, before the work has unwound. A request that waited out its
   budget gets 503 without any work. Uploads have no deadline: they are paced (uploads.py).
6. Client gone: the work is cancelled when the client disconnects, so an overloaded process
   stops working for nobody and recovers as soon as the load drops.

The app runs in the request's own task. Only a request still running after WATCH_AFTER_S
(or waiting in line) listens for the disconnect and gets a timer for its deadline; until
then one timer per process (`Watches`) serves every request, so the usual request costs no
extra task and no timer (bench/README.md, "Where the time goes"; docs/BENCHMARKS.md, "The
edge outermost").
"""

import asyncio
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from time import perf_counter
from typing import Any

import anyio
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.middleware import edge
from app.middleware.admission import Admission
from app.observability import context, logs, metrics, recorder
from app.observability.routes import RouteTemplates

log = logging.getLogger("conduit.edge")

METRICS_PATH = "/metrics"
LIVENESS = frozenset({"/livez", "/healthz"})  # answered here: the loop turns, that is all
EXEMPT = frozenset({"/readyz", METRICS_PATH, *LIVENESS})  # never shed, timed out or counted
# A request still running after this long starts listening for its client's disconnect.
WATCH_AFTER_S = 0.05
# A wait longer than this is no real queue but a wrong clock or a made-up header: ignored.
MAX_PLAUSIBLE_WAIT_S = 3600.0
# nginx's code for "client closed the request": the work was cancelled, nobody got an answer,
# and it is not the server's error (a 500 would count in every 5xx alert).
CLIENT_GONE = 499

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REQUEST_ID = b"x-request-id"
_REQUEST_START = b"x-request-start"
_VARY_ORIGIN = (b"vary", b"Origin")
_ALIVE = b'{"status":"ok"}'
_ALIVE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"15")]
_CORS_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key")


class RequestEdge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        deadline_s: float,
        max_in_flight: int,
        max_queued: int = 0,
        max_body_bytes: int = 1_048_576,
        max_header_bytes: int | None = None,
        streamed: Mapping[str, int] | None = None,
        cors_origins: Sequence[str] = (),
        routes: RouteTemplates | None = None,
        metrics: bool = False,
        access_log: bool = False,
    ) -> None:
        """`streamed`: path → its own body limit (uploads); `routes`: the route templates
        the metrics and log lines are labelled with (none: no metrics, no log)."""
        self.app = app
        self.deadline_s = deadline_s
        self.admission = Admission(slots=max_in_flight, max_queued=max_queued)
        self.watches = Watches()
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.streamed = dict(streamed or {})
        self.routes = routes
        self.metrics = metrics and routes is not None
        self.access_log = access_log and routes is not None
        self.cors = CORSMiddleware(
            self._with_origin,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=_CORS_HEADERS,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif edge.header(scope, b"origin") is not None:
            await self.cors(scope, receive, send)
        else:
            await self._observed(scope, receive, send, _VARY_ORIGIN)

    async def _with_origin(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._observed(scope, receive, send)

    async def _observed(
        self, scope: Scope, receive: Receive, send: Send, *extra: tuple[bytes, bytes]
    ) -> None:
        path = scope["path"]
        if path == METRICS_PATH and self.metrics and scope["method"] == "GET":
            await _serve_metrics(send)
            return
        raw_id = edge.header(scope, _REQUEST_ID)
        request_id = context.accept_request_id(raw_id)
        token = context.enter(context.RequestContext(request_id))
        exchange = Exchange(send, [(_REQUEST_ID, request_id.encode()), *extra])
        if self.metrics:
            recorder.HTTP.started()
        started = perf_counter()
        failed = True
        try:
            if path in LIVENESS and scope["method"] == "GET":
                await exchange.send(
                    {"type": "http.response.start", "status": 200, "headers": _ALIVE_HEADERS}
                )
                await exchange.send({"type": "http.response.body", "body": _ALIVE})
            else:
                await self._guarded(scope, receive, exchange)
            failed = False
        except Exception:
            # The app's 500 is rendered inside (app/main.py): only a fault of the edge's own
            # layers gets here with nothing sent.
            if not exchange.started:
                log.exception("unhandled error at the edge on %s %s", scope["method"], path)
                await edge.send_error(exchange.send, 500, "internal server error")
            raise
        finally:
            if self.metrics or self.access_log:
                status = exchange.status
                if exchange.gone and not exchange.started and not failed:
                    status = CLIENT_GONE  # cancelled, nobody to answer
                self._record(scope, status, perf_counter() - started, failed)
            context.leave(token)

    async def _guarded(self, scope: Scope, receive: Receive, exchange: "Exchange") -> None:
        if self.max_header_bytes is not None and _header_bytes(scope) > self.max_header_bytes:
            # httptools (the server's parser) accepts headers of any size; without a proxy
            # in front this is the only place they are refused.
            await _refuse(exchange, 431, f"request headers exceed {self.max_header_bytes} bytes")
            return
        if scope["path"] in EXEMPT:
            await self.app(scope, receive, exchange.send)
            return
        limit = self.max_body_bytes
        streamed = False
        if scope["method"] not in _NO_BODY:
            if (own := self._streamed_limit(scope["path"])) is not None:
                limit, streamed = own, True
            declared = edge.header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _refuse(exchange, 413, f"request body exceeds {limit} bytes")
                return
        budget_s = self.deadline_s - queued_s(scope["headers"], time.time())
        # What is left of its budget (it may have waited in front of this process) would not
        # cover its own service: no work for a request that would end in 504. Never on this
        # ground with half its budget left: after a slow spell the estimate is stale until
        # requests let in measure it again.
        if budget_s <= min(self.admission.margin_s(), self.deadline_s / 2):
            await _shed(exchange, "queued")
            return
        if not self.admission.admits(budget_s):
            await _shed(exchange, "overload", self.admission.retry_after_s())
            return
        if streamed:
            exchange.stream(receive, limit)
            await self._admitted(scope, exchange, None)
            return
        deadline = time.monotonic() + budget_s
        if scope["method"] in _NO_BODY:
            exchange.body = b""
        else:  # under the deadline, but not listened to: the reader hears a disconnect
            async with exchange.work(deadline, self.deadline_s):
                try:
                    exchange.body = await edge.read_body(receive, limit=limit)
                except PayloadTooLarge:
                    await _refuse(exchange, 413, f"request body exceeds {limit} bytes")
                    return
            if exchange.body is None:  # the client went away, or the deadline passed
                exchange.gone = not exchange.answered
                return
        exchange.body_read(receive)
        await self._admitted(scope, exchange, deadline)

    async def _admitted(self, scope: Scope, exchange: "Exchange", deadline: float | None) -> None:
        """Waits for a slot (in line if need be), then runs the app under the deadline."""
        ticket = self.admission.enter()
        if not ticket.done():
            if deadline is None:
                timeout = None
            else:
                timeout = deadline - time.monotonic() - self.admission.margin_s()
            try:
                await asyncio.wait(
                    {ticket, exchange.listen()},
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            except BaseException:  # cancelled in line (the server shutting down)
                self.admission.leave(ticket)
                exchange.stop_listening()
                raise
            if exchange.gone or not ticket.done():  # a slot it got meanwhile goes on
                self.admission.leave(ticket)
                exchange.stop_listening()
                if not exchange.gone:  # its budget would end before its service could
                    await _shed(exchange, "queued", self.admission.retry_after_s())
                return
        served_from = time.monotonic()
        try:
            async with exchange.work(deadline, self.deadline_s, self.watches):
                await self.app(scope, exchange.receive, exchange.send)
        finally:
            self.admission.release(time.monotonic() - served_from)
        if exchange.gone and not exchange.answered and exchange.cancelled:
            log.info("client went away: %s %s cancelled", scope["method"], scope["path"])

    def _streamed_limit(self, path: str) -> int | None:
        for prefix, limit in self.streamed.items():
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return None

    def _record(self, scope: Scope, status: int, seconds: float, failed: bool) -> None:
        assert self.routes is not None  # noqa: S101 - metrics and logs are on only with routes
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = self.routes(scope)
        if self.metrics:
            served = context.current()
            tier = served.tier if served is not None else 0
            recorder.HTTP.finished(method, route, status, seconds, failed, tier)
        if self.access_log:
            logs.access(method, route, status, seconds)


class Exchange:
    """One request's passage through the edge: what it sent, whether its client left, and
    the cancellation of its work (at the deadline, or when the client leaves)."""

    __slots__ = (
        "_disconnected",
        "_headers",
        "_listener",
        "_receive",
        "_reply",
        "_send",
        "_streamed_left",
        "_task",
        "answered",
        "body",
        "cancelled",
        "gone",
        "started",
        "status",
    )

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._headers = headers
        self.status = 500  # no response started: the client saw nothing, or an error page
        self.started = False  # the response has begun
        self.answered = False  # the edge answered (504): the app's own response is dropped
        self.gone = False  # the client disconnected
        self.cancelled = False  # the edge cancelled the work
        self.body: bytes | None = None  # read, not yet handed to the app
        self._receive: Receive | None = None
        self._streamed_left: int | None = None  # bytes an upload may still send
        self._task: asyncio.Task[Any] | None = None  # the work, while cancellable
        self._listener: asyncio.Task[None] | None = None
        self._disconnected: asyncio.Future[None] | None = None
        self._reply: asyncio.Task[None] | None = None

    async def send(self, message: Message) -> None:
        if not self.answered:
            await self._deliver(message)

    async def _deliver(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
            message = {**message, "headers": [*message.get("headers", ()), *self._headers]}
        await self._send(message)

    async def receive(self) -> Message:
        """The app's `receive`: the body read at the edge, or an upload as it streams; after
        the body, the disconnect when it happens."""
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if self._streamed_left is not None:
            return await self._stream_message()
        await self.listen()
        return {"type": "http.disconnect"}

    def body_read(self, receive: Receive) -> None:
        """The body is in hand: the server's `receive` now only says when the client left."""
        self._receive = receive

    def stream(self, receive: Receive, limit: int) -> None:
        """Pass an upload's body through as it arrives, counted against `limit`."""
        self._receive, self._streamed_left = receive, limit

    async def _stream_message(self) -> Message:
        assert self._receive is not None  # noqa: S101 - set by stream()
        assert self._streamed_left is not None  # noqa: S101
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._streamed_left = None
            self._hang_up()
            return message
        self._streamed_left -= len(message.get("body", b""))
        if self._streamed_left < 0:
            raise PayloadTooLarge("request body exceeds the upload limit")
        if not message.get("more_body", False):
            self._streamed_left = None  # the whole body: from now on, listen for the client
        return message

    def listen(self) -> "asyncio.Future[None]":
        """Done when the client disconnects; starts listening for it, if not yet."""
        if self._disconnected is None:
            self._disconnected = asyncio.get_running_loop().create_future()
            if self.gone:
                self._disconnected.set_result(None)
        # Not while an upload streams: its body is the app's to read, and the app hears a
        # disconnect among it.
        if self._listener is None and self._receive is not None and self._streamed_left is None:
            self._listener = asyncio.create_task(self._listen(self._receive))
        return self._disconnected

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._hang_up()

    def _hang_up(self) -> None:
        self.gone = True
        if self._disconnected is not None and not self._disconnected.done():
            self._disconnected.set_result(None)
        self._cancel()

    def stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.done():
            listener.cancel()

    def _expire(self, deadline_s: float) -> None:
        if not self.started and not self.gone:
            self.answered = True
            metrics.HTTP_SHED.labels("deadline").inc()
            message = f"request took longer than {deadline_s:g} s"
            self._reply = asyncio.create_task(_timeout(self._deliver, message))
        self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self.cancelled:
            self.cancelled = True
            self._task.cancel()

    def work(
        self, deadline: float | None, deadline_s: float, watches: "Watches | None" = None
    ) -> "_Work":
        return _Work(self, deadline, deadline_s, watches)


class Watches:
    """When each request at work has run WATCH_AFTER_S: one timer for all of them.

    All start watching the same delay after they start, so they come due in the order they
    started: a queue, with one timer armed for its head. A libuv timer armed and cancelled
    per request was a measurable share of the edge's CPU (docs/BENCHMARKS.md, "The edge
    outermost"), for a moment that most requests never reach. The queue holds weak
    references: a request that has ended lets go of its objects at once, not WATCH_AFTER_S
    later."""

    __slots__ = ("_due", "_loop", "_timer")

    def __init__(self) -> None:
        self._due: deque[tuple[float, weakref.ref[_Work]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, at: float, work: "_Work") -> None:
        if loop is not self._loop:  # another event loop (tests): the old one's queue is moot
            self._loop, self._timer = loop, None
            self._due.clear()
        self._due.append((at, weakref.ref(work)))
        if self._timer is None:
            self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None  # noqa: S101 - armed by add()
        now = self._loop.time()
        due = self._due
        while due:
            at, work = due[0]
            if at > now:
                self._timer = self._loop.call_at(at, self._fire)
                return
            due.popleft()
            if (running := work()) is not None:
                running.watch_due()


class _Work:
    """The app's (or the body reader's) part of a request, cancellable by the edge: at the
    deadline (504 at once, before the work has unwound: cancelling a running statement can
    take seconds), or when the client disconnects (watched from WATCH_AFTER_S on, through
    `watches`; none: not listened to). A cancellation that comes from inside the work (not
    the edge's, nor the server's) ends in a clean 503."""

    __slots__ = (
        "__weakref__",
        "_deadline",
        "_deadline_s",
        "_exchange",
        "_expires",
        "_running",
        "_timer",
        "_watches",
    )

    def __init__(
        self,
        exchange: Exchange,
        deadline: float | None,
        deadline_s: float,
        watches: Watches | None,
    ) -> None:
        self._exchange, self._deadline, self._deadline_s = exchange, deadline, deadline_s
        self._watches = watches
        self._expires: float | None = None  # the deadline on the loop's clock
        self._running = False
        self._timer: asyncio.TimerHandle | None = None  # the deadline's, once it is set

    async def __aenter__(self) -> None:
        exchange = self._exchange
        loop = asyncio.get_running_loop()
        exchange._task = asyncio.current_task()
        exchange.cancelled = False
        self._running = True
        now = loop.time()
        if self._deadline is not None:
            self._expires = now + self._deadline - time.monotonic()
        expires = self._expires
        if self._watches is not None and (expires is None or now + WATCH_AFTER_S < expires):
            self._watches.add(loop, now + WATCH_AFTER_S, self)  # the deadline's timer then
        else:
            self._arm_deadline(loop)

    def watch_due(self) -> None:
        """WATCH_AFTER_S have passed (Watches): listen for the client, and set the deadline."""
        if self._running:
            self._exchange.listen()
            self._arm_deadline(asyncio.get_running_loop())

    def _arm_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._expires is not None:
            self._timer = loop.call_at(self._expires, self._exchange._expire, self._deadline_s)

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        exchange = self._exchange
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
        task, exchange._task = exchange._task, None
        assert task is not None  # noqa: S101 - set on entry
        if exchange.cancelled:
            task.uncancel()
        if exchange._reply is not None:
            reply, exchange._reply = exchange._reply, None
            await reply
        exchange.stop_listening()
        if kind is None or not issubclass(kind, asyncio.CancelledError):
            return False
        if task.cancelling():  # the server's (shutting down): not ours to swallow
            return False
        if not exchange.cancelled and not exchange.started:  # from inside the work
            await edge.send_error(
                exchange._deliver,
                503,
                "request cancelled, retry shortly",
                headers=[edge.retry_after(1)],
            )
        return True


async def _timeout(deliver: Send, message: str) -> None:
    await edge.send_error(deliver, 504, message)


def queued_s(headers: Iterable[tuple[bytes, bytes]], now: float) -> float:
    """Seconds since nginx handed the request on (`X-Request-Start: t=<epoch seconds>`, as
    `t=${msec}` writes it), 0 when the header is absent, malformed or not in the past."""
    for name, value in headers:
        if name == _REQUEST_START:
            try:
                started = float(value.removeprefix(b"t="))
            except ValueError:
                return 0.0
            waited = now - started
            return waited if math.isfinite(waited) and 0 < waited < MAX_PLAUSIBLE_WAIT_S else 0.0
    return 0.0


def _header_bytes(scope: Scope) -> int:
    """The request line's target and the headers, about as they came on the wire."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


async def _refuse(exchange: Exchange, status: int, message: str) -> None:
    await edge.send_error(exchange.send, status, message)


async def _shed(exchange: Exchange, reason: str, retry_after_s: int = 1) -> None:
    """503 + Retry-After at once, counted by reason."""
    metrics.HTTP_SHED.labels(reason).inc()
    await edge.send_error(
        exchange.send, 503, "server busy, retry shortly", headers=[edge.retry_after(retry_after_s)]
    )


async def _serve_metrics(send: Send) -> None:
    recorder.flush()  # this process's latest tallies, at least
    # Reading every worker's files is blocking I/O: off the event loop.
    body = await anyio.to_thread.run_sync(metrics.exposition)
    headers = [
        (b"content-type", metrics.CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
