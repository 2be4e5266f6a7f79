"""Every request lives within a deadline, dies with its client, and waits for its turn only
as long as it can still be answered in time.

- Deadline (REQUEST_DEADLINE_S): past it the request's task is cancelled (psycopg cancels the
  running statement on the server, the transaction rolls back) and the client gets 504. It
  counts from when nginx handed the request on (`X-Request-Start: t=<epoch seconds>`, set by
  nginx, deploy/stack/nginx.conf), so time spent waiting for a worker to accept it is spent
  budget; a request that has already waited the whole budget gets 503 without any work.
- Client gone: the request's task is cancelled as soon as the server sees the disconnect,
  so an overloaded process stops working for nobody and recovers when the load drops.
- Admission (admission.py): MAX_IN_FLIGHT requests are worked on at once; the others wait in
  a bounded line (MAX_QUEUED) if the wait it predicts fits their budget, else 503 with a
  Retry-After from the line's drain time, without any work. The wait counts against the
  deadline, and a client that leaves while waiting leaves the line. Health probes and
  /metrics are never shed, timed out or counted.
- Streamed uploads (`streamed` paths, POST: bulk imports) have no deadline, as they last as
  long as the client's link needs; they are paced instead (uploads.py). They still die with
  their client, and are read at most a few messages ahead of the app, so a fast client
  cannot park a 100 MB body in this process's memory.

One pump task is the only reader of the server's `receive`: it hands the body to the app
and turns an `http.disconnect` into a cancellation.
"""

import asyncio
import logging
import math
import time
from collections.abc import Collection, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.middleware import edge
from app.middleware.admission import Admission
from app.middleware.uploads import is_streamed
from app.observability import metrics

log = logging.getLogger("conduit.lifetime")
EXEMPT = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
REQUEST_START = b"x-request-start"
# A wait longer than this is no real queue but a wrong clock or a made-up header: ignored.
MAX_PLAUSIBLE_WAIT_S = 3600.0
STREAMED_READ_AHEAD = 4  # body messages of an upload read before the app asks for them


class RequestLifetime:
    def __init__(
        self,
        app: ASGIApp,
        *,
        deadline_s: float,
        max_in_flight: int,
        max_queued: int = 0,
        streamed: Collection[str] = (),
    ) -> None:
        self.app = app
        self.deadline_s = deadline_s
        self.admission = Admission(slots=max_in_flight, max_queued=max_queued)
        self.streamed = frozenset(streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        budget_s = self.deadline_s - queued_s(scope["headers"], time.time())
        if budget_s <= 0:  # nobody may be waiting any more: no work for a stale request
            await _shed(send, "queued")
            return
        if not self.admission.admits(budget_s):
            await _shed(send, "overload", self.admission.retry_after_s())
            return
        if is_streamed(scope, self.streamed):
            await self._run(scope, receive, send, budget_s, streamed=True)
        else:
            await self._run(scope, receive, send, budget_s)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        budget_s: float,
        *,
        streamed: bool = False,
    ) -> None:
        # All of a small body (BodyLimit refuses more); a few messages of an upload ahead.
        messages: asyncio.Queue[Message] = asyncio.Queue(STREAMED_READ_AHEAD if streamed else 0)
        gone = asyncio.Event()
        started = False
        answered = False  # the deadline's 504 went out: the app's own response is dropped

        async def pump() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()  # first: a full queue (an app that stopped reading) waits
                await messages.put(message)
                if gone.is_set():
                    return

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def serve() -> None:
            await self.app(scope, messages.get, tracked_send)

        pump_task = asyncio.create_task(pump())
        gone_task = asyncio.create_task(gone.wait())
        ticket = self.admission.enter()
        in_line = True  # until it holds a slot, or has left the line
        app_task: asyncio.Task[None] | None = None
        served_from = 0.0
        try:
            if not ticket.done():  # in line: until a slot, the client leaves, or no time is left
                arrived = time.monotonic()
                line: set[asyncio.Future[Any]] = {ticket, gone_task}
                await asyncio.wait(
                    line,
                    timeout=budget_s - self.admission.margin_s(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not ticket.done():
                    self.admission.leave(ticket)
                    in_line = False
                    if not gone.is_set():  # its budget would end before its service could
                        await _shed(send, "queued", self.admission.retry_after_s())
                    return
                budget_s -= time.monotonic() - arrived
            served_from = time.monotonic()
            in_line = False
            app_task = asyncio.create_task(serve())
            await asyncio.wait(
                {app_task, gone_task},
                timeout=None if streamed else budget_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if app_task.done():
                if app_task.cancelled():  # cancelled from inside (not by us): a clean 503
                    if not started:
                        await edge.send_error(
                            send,
                            503,
                            "request cancelled, retry shortly",
                            headers=[edge.retry_after(1)],
                        )
                    return
                app_task.result()  # re-raise what the app raised
                return
            if not gone.is_set() and not started:
                # Answer at the deadline, before the work has unwound: cancelling a running
                # statement can take seconds (psycopg asks the server to stop it and waits up
                # to 5 s more for its answer; PgBouncer ignores that request for a query still
                # queued for a server connection, as while PostgreSQL restarts).
                answered = True
                metrics.HTTP_SHED.labels("deadline").inc()
                await edge.send_error(send, 504, f"request took longer than {self.deadline_s:g} s")
            app_task.cancel()
            try:
                await app_task
            except asyncio.CancelledError:
                pass
            except Exception:
                if not answered:
                    raise
                # The client has its 504; a failure while unwinding is only worth a line.
                log.warning(
                    "error while cancelling %s %s", scope["method"], scope["path"], exc_info=True
                )
            if gone.is_set() and not answered:  # (after an answer, receive() says "disconnect")
                log.info("client went away: %s %s cancelled", scope["method"], scope["path"])
        finally:
            if in_line:  # cancelled while waiting
                self.admission.leave(ticket)
            elif app_task is not None:
                self.admission.release(time.monotonic() - served_from)
            pump_task.cancel()
            gone_task.cancel()


def queued_s(headers: Iterable[tuple[bytes, bytes]], now: float) -> float:
    """Seconds since nginx handed the request on (`X-Request-Start: t=<epoch seconds>`, as
    `t=${msec}` writes it), 0 when the header is absent, malformed or not in the past."""
    for name, value in headers:
        if name == REQUEST_START:
            try:
                started = float(value.removeprefix(b"t="))
            except ValueError:
                return 0.0
            waited = now - started
            return waited if math.isfinite(waited) and 0 < waited < MAX_PLAUSIBLE_WAIT_S else 0.0
    return 0.0


async def _shed(send: Send, reason: str, retry_after_s: int = 1) -> None:
    """503 + Retry-After at once, counted by reason."""
    metrics.HTTP_SHED.labels(reason).inc()
    await edge.send_error(
        send, 503, "server busy, retry shortly", headers=[edge.retry_after(retry_after_s)]
    )
