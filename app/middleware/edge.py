"""The toolkit of the hand-written ASGI edge: one error sender in the RealWorld shape, one
body reader and replayer, and one reader of `Authorization: Token <jwt>` with one rule for a
bad token (401, whichever layer reads it first; the token is decoded once per request)."""

from collections.abc import Iterable

import orjson
from starlette.types import Message, Receive, Scope, Send

from app.errors import AppError, PayloadTooLarge, Unauthorized
from app.observability import context
from app.security import read_user_id

Headers = list[tuple[bytes, bytes]]
_VIEWER = "conduit.viewer"  # scope key: the token's user id (or its error), once decoded


def error_body(*messages: str) -> bytes:
    return orjson.dumps({"errors": {"body": list(messages)}})


async def send_error(
    send: Send, status: int, message: str, *, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete JSON error response, `{"errors": {"body": [message]}}`."""
    body = error_body(message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_app_error(send: Send, exc: AppError) -> None:
    """An AppError as the app's own handler renders it (app/main.py)."""
    headers = [(b"www-authenticate", b"Token")] if exc.status_code == 401 else []
    await send_error(send, exc.status_code, str(exc), headers=headers)


def retry_after(seconds: int) -> tuple[bytes, bytes]:
    return (b"retry-after", str(seconds).encode())


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a (lower-case) request header."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(receive: Receive, *, limit: int) -> bytes | None:
    """The whole request body; None if the client went away first. PayloadTooLarge past
    `limit` bytes, as soon as they arrive (a body without Content-Length cannot slip past)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the server's messages
    (a disconnect still reaches whoever listens for it)."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying


def viewer_id(scope: Scope, secret: str) -> int | None:
    """The user id the request's token vouches for, None without an Authorization header.
    Unauthorized for anything else than a valid `Token <jwt>`."""
    if _VIEWER not in scope:
        try:
            scope[_VIEWER] = _decode(header(scope, b"authorization"), secret)
        except Unauthorized as exc:
            scope[_VIEWER] = exc
    found: int | Unauthorized | None = scope[_VIEWER]
    if isinstance(found, Unauthorized):
        raise found
    return found


def _decode(authorization: bytes | None, secret: str) -> int | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme != "Token" or not token.strip():  # RealWorld sends "Authorization: Token <jwt>"
        raise Unauthorized("expected 'Authorization: Token <jwt>'")
    user_id = read_user_id(token.strip(), secret=secret)
    context.set_user_id(user_id)  # every log line of this request names its user
    return user_id
