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
stored response commit together, here, through app/transaction.py like every other commit
(cache versions, then deferred jobs). Without the header nothing changes.

Paths under an `exempt` prefix (bulk imports, whose bodies stream and may be 100 MB) pass
through untouched; those routes honour the header themselves. `unkeyed` paths (sign-up and
login) ignore the header altogether, as if none were sent: their responses carry a token,
which must never be stored and handed out again.
"""

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import transaction
from app.config import Settings
from app.db import is_unavailable
from app.errors import PayloadTooLarge, Unauthorized
from app.middleware import edge
from app.models import IdempotencyKey
from app.observability import metrics
from app.state import AppState, app_state

log = logging.getLogger("conduit.idempotency")

SESSION_SCOPE_KEY = "conduit.session"
HEADER = b"idempotency-key"
METHODS = frozenset({"POST", "PUT", "DELETE"})
MAX_KEY_LENGTH = 255


class Idempotency:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        exempt: tuple[str, ...] = (),
        unkeyed: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.settings = settings
        self.exempt = exempt
        self.unkeyed = frozenset(unkeyed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in METHODS
            or (raw_key := edge.header(scope, HEADER)) is None
            or scope["path"].startswith(self.exempt)
            or scope["path"] in self.unkeyed
        ):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not (0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
            await edge.send_error(
                send, 422, f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
            )
            return
        try:
            owner = self._owner(scope)
            # The request edge has already refused anything larger.
            body = await edge.read_body(receive, limit=self.settings.max_body_bytes)
        except (Unauthorized, PayloadTooLarge) as exc:
            await edge.send_app_error(send, exc)
            return
        if body is None:  # the client went away
            return
        state = app_state(scope)
        try:
            async with state.sessions() as session:
                await self._handle(
                    state,
                    session,
                    scope,
                    body,
                    send,
                    owner=owner,
                    key=key,
                    fingerprint=_fingerprint(scope, body),
                )
        except (DBAPIError, PoolTimeout) as exc:
            if not is_unavailable(exc):
                raise
            # This middleware runs outside FastAPI's handlers: answer as they would. Whether
            # or not a commit got through, a retry with the same key is safe.
            log.warning("database unavailable during an idempotent request", exc_info=True)
            await edge.send_error(
                send,
                503,
                "database busy or unavailable, retry shortly",
                headers=[edge.retry_after(1)],
            )

    async def _handle(
        self,
        state: AppState,
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
            await edge.send_error(
                send, 409, "a request with this Idempotency-Key is still in progress"
            )
            return
        stored = await _stored(session, owner=owner, key=key)
        if stored is not None:  # nothing to write: leaving the block rolls back
            if stored.request_hash != fingerprint:
                await edge.send_error(
                    send, 422, "Idempotency-Key was already used for a different request"
                )
                return
            metrics.IDEMPOTENT_REPLAYS.inc()
            await _replay(send, stored)
            return

        response = _CapturedResponse()
        replayed = edge.replay(body, _no_more_messages)
        await self.app({**scope, SESSION_SCOPE_KEY: session}, replayed, response.send)
        if not 200 <= response.status < 300:
            await transaction.rollback(session)
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
        await transaction.commit(session, state)  # the effect and its stored response, together
        await response.forward(send)

    def _owner(self, scope: Scope) -> str:
        """The token's user, or the client address when anonymous (sign-up)."""
        user_id = edge.viewer_id(scope, self.settings.jwt_secret)
        if user_id is not None:
            return f"user:{user_id}"
        client = scope.get("client")
        return f"client:{client[0] if client else 'unknown'}"


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


async def _no_more_messages() -> Message:
    # The app runs on a captured response; the lifetime middleware above watches the client.
    return {"type": "http.disconnect"}
