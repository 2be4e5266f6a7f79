"""Idempotency keys for POST/PUT/DELETE, with the semantics payment APIs use.

A client sends `Idempotency-Key: <key>`. The first request that completes with a 2xx has its
response (status, body) stored in the SAME transaction as its effect, for
IDEMPOTENCY_RETENTION_S, per owner (the token's user, or the client address when anonymous,
as for registration). Then:

- a replay with the same key and the same request returns the stored response with
  `Idempotent-Replayed: true` and applies nothing, even if the first response never reached
  the client (the process died after commit);
- the same key with a different request (method, path, body) is 422;
- the same key while the first request is still running is 409 (a transaction-scoped
  advisory lock, which works through PgBouncer in transaction mode);
- a request that fails (4xx/5xx) stores nothing and rolls back, so it can be retried.

The middleware opens the request's transaction itself and hands it to `get_session`
(`scope[SESSION_SCOPE_KEY]`), which then neither commits nor rolls back: the effect and the
stored response commit together, here. Without the header nothing changes.

Paths under an `exempt` prefix (bulk imports, whose bodies stream and may be 100 MB) pass
through untouched; those routes honour the header themselves.
"""

import hashlib
import logging
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import queue
from app.cache import Cache, take_changes
from app.config import Settings
from app.db import is_unavailable
from app.errors import AppError
from app.models import IdempotencyKey
from app.observability import metrics
from app.security import read_user_id

log = logging.getLogger("conduit.idempotency")

SESSION_SCOPE_KEY = "conduit.session"
HEADER = b"idempotency-key"
METHODS = frozenset({"POST", "PUT", "DELETE"})
MAX_KEY_LENGTH = 255


class Idempotency:
    def __init__(self, app: ASGIApp, *, settings: Settings, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.settings = settings
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"]) if scope["type"] == "http" else {}
        raw_key = headers.get(HEADER)
        if (
            raw_key is None
            or scope["method"] not in METHODS
            or scope["path"].startswith(self.exempt)
        ):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not (0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
            await _send_error(
                send, 422, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
            )
            return
        owner = self._owner(scope, headers)
        if owner is None:  # a bad token: let the app answer 401 as usual
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        fingerprint = _fingerprint(scope, body)
        sessions: async_sessionmaker[AsyncSession] = scope["state"]["sessionmaker"]
        try:
            async with sessions() as session:
                await self._handle(
                    session, scope, body, send, owner=owner, key=key, fingerprint=fingerprint
                )
        except (DBAPIError, PoolTimeout) as exc:
            if not is_unavailable(exc):
                raise
            # This middleware runs outside FastAPI's handlers: answer as they would. Whether
            # or not a commit got through, a retry with the same key is safe.
            log.warning("database unavailable during an idempotent request", exc_info=True)
            await _send_error(
                send, 503, "database busy or unavailable, retry shortly", retry_after=1
            )

    async def _handle(
        self,
        session: AsyncSession,
        scope: Scope,
        body: bytes,
        send: Send,
        *,
        owner: str,
        key: str,
        fingerprint: str,
    ) -> None:
        lock = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))")
        if not await session.scalar(lock, {"name": f"{owner}\n{key}"}):
            await _send_error(send, 409, "a request with this Idempotency-Key is still in progress")
            return
        stored = await _stored(session, owner=owner, key=key)
        if stored is not None:  # nothing to write: leaving the block rolls back
            if stored.request_hash != fingerprint:
                await _send_error(
                    send, 422, "Idempotency-Key was already used for a different request"
                )
                return
            metrics.IDEMPOTENT_REPLAYS.inc()
            await _replay(send, stored)
            return

        response = _CapturedResponse()
        await self.app({**scope, SESSION_SCOPE_KEY: session}, _replayer(body), response.send)
        if not 200 <= response.status < 300:
            queue.discard(session)
            await session.rollback()
            await response.forward(send)
            return
        session.add(
            IdempotencyKey(
                owner=owner,
                key=key,
                request_hash=fingerprint,
                status=response.status,
                content_type=response.content_type,
                body=response.body,
                expires_at=datetime.now(UTC)
                + timedelta(seconds=self.settings.idempotency_retention_s),
            )
        )
        await session.commit()  # the effect and its stored response, together
        cache: Cache = scope["state"]["cache"]
        await cache.publish(take_changes(session))
        await response.forward(send)

    def _owner(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        authorization = headers.get(b"authorization")
        if authorization is None:
            client = scope.get("client")
            return f"client:{client[0] if client else 'unknown'}"
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        try:
            if scheme != "Token":
                return None
            return f"user:{read_user_id(token.strip(), secret=self.settings.jwt_secret)}"
        except AppError:
            return None


async def _stored(session: AsyncSession, *, owner: str, key: str) -> IdempotencyKey | None:
    """The live stored response; an expired one is purged on access (a periodic purge
    job comes with the job queue)."""
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.owner == owner,
            IdempotencyKey.key == key,
            IdempotencyKey.expires_at <= func.now(),
        )
    )
    return await session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
    )


def _fingerprint(scope: Scope, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (
        scope["method"].encode(),
        scope["path"].encode(),
        scope.get("query_string", b""),
        body,
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replayer(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class _CapturedResponse:
    """Holds the app's response until the transaction has committed."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def content_type(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == b"content-type":
                return value.decode("latin-1")
        return None

    async def forward(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _replay(send: Send, stored: IdempotencyKey) -> None:
    headers = [
        (b"content-length", str(len(stored.body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    if stored.content_type:
        headers.append((b"content-type", stored.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})


async def _send_error(
    send: Send, status: int, message: str, *, retry_after: int | None = None
) -> None:
    body = orjson.dumps({"errors": {"body": [message]}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
