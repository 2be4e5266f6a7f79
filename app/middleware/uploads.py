"""Streamed uploads (bulk imports): a few at once per process, and a pace instead of a
deadline.

A 100 MB import takes as long as the client's link needs, so the request deadline
(request_edge.py) does not apply to these paths. Instead every chunk of the body must arrive
within `idle_s` of the one before; an upload that stalls gets 408, raised inside the route
(`RequestTimeout`) so that its transaction rolls back. Each upload holds a pooled database
connection for its whole length: past `max_concurrent` at once in this process the next one
gets 503 + Retry-After without any work. (How many one user may run at once, across
processes, is the route's business: app/imports/service.py.)
"""

import asyncio
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import RequestTimeout
from app.middleware import edge
from app.observability import metrics

RETRY_AFTER_S = 5  # an upload in progress does not end within a second


class StreamedUploads:
    def __init__(
        self, app: ASGIApp, *, paths: Collection[str], idle_s: float, max_concurrent: int
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.idle_s = idle_s
        self.max_concurrent = max_concurrent
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_streamed(scope, self.paths):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_concurrent:
            metrics.HTTP_SHED.labels("uploads").inc()
            await edge.send_error(
                send,
                503,
                "too many uploads in progress, retry shortly",
                headers=[edge.retry_after(RETRY_AFTER_S)],
            )
            return
        self.active += 1
        try:
            await self.app(scope, paced(receive, self.idle_s), send)
        finally:
            self.active -= 1


def is_streamed(scope: Scope, paths: Collection[str]) -> bool:
    """An upload to one of `paths` (their other methods are ordinary requests)."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in paths


def paced(receive: Receive, idle_s: float) -> Receive:
    """`receive`, raising RequestTimeout when the next piece of the body takes longer than
    `idle_s`. After the body, waiting (for a disconnect) has no pace."""
    body_done = False

    async def receive_paced() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            async with asyncio.timeout(idle_s):
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(
                f"upload stalled: no data for {idle_s:g} s, nothing was imported"
            ) from None
        body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_paced
