"""Requests over the size limits are refused before the app parses anything: a request line
and headers over `max_header_bytes` with 431, a body over the limit with 413."""

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge
from app.middleware import edge

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyLimit:
    """The body is read up to `max_bytes` and replayed, so a chunked upload without
    Content-Length cannot slip past the limit either.

    `streamed` maps path prefixes to their own, larger limits (bulk imports): those bodies
    are passed through as they arrive, never buffered, and counted; going over the limit
    raises PayloadTooLarge inside the route (413), which rolls its transaction back.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        streamed: Mapping[str, int] | None = None,
        max_header_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = dict(streamed or {})
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.max_header_bytes is not None
            and scope["type"] == "http"
            and _header_bytes(scope) > self.max_header_bytes
        ):
            # httptools (the server's parser) accepts headers of any size; without a proxy
            # in front this is the only place they are refused.
            await edge.send_error(
                send, 431, f"request headers exceed {self.max_header_bytes} bytes"
            )
            return
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        declared = edge.header(scope, b"content-length")
        limit = self._streamed_limit(scope["path"])
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > (limit or self.max_bytes)
        ):
            await _too_large(send, limit or self.max_bytes)
            return
        if limit is not None:
            await self.app(scope, _counted(receive, limit), send)
            return
        try:
            body = await edge.read_body(receive, limit=self.max_bytes)
        except PayloadTooLarge:
            await _too_large(send, self.max_bytes)
            return
        if body is None:  # the client went away
            return
        await self.app(scope, edge.replay(body, receive), send)

    def _streamed_limit(self, path: str) -> int | None:
        for prefix, limit in self.streamed.items():
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return None


def _header_bytes(scope: Scope) -> int:
    """The request line's target and the headers, about as they came on the wire."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size


async def _too_large(send: Send, limit: int) -> None:
    await edge.send_error(send, 413, f"request body exceeds {limit} bytes")


def _counted(receive: Receive, limit: int) -> Receive:
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        return message

    return counted
