"""Per-client rate limits in Redis, so they hold across every worker and machine.

Sign-up and login are limited per client address (they are the brute-force and
credential-stuffing surface, and argon2 makes each attempt expensive for us too); login
also per account, the email in its body, so attempts spread over many addresses still run
into a limit; other writes per user (per address without a token). Over any limit: 429
with Retry-After. The address is the one uvicorn trusts: the peer, or X-Forwarded-For only
from FORWARDED_ALLOW_IPS (the proxy), so a client cannot pick a fresh one per request.

Fixed windows: one INCR and one EXPIRE per bucket, pipelined (one round trip). A library
(`limits`) would bring a second Redis client for its async storage for the same commands.
Redis trouble fails open: the limiter is protection, not a dependency worth an outage.
"""

import hashlib
import logging
import time

import orjson
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.errors import PayloadTooLarge, Unauthorized
from app.middleware import edge
from app.observability import metrics
from app.state import app_state

log = logging.getLogger("conduit.ratelimit")
LOGIN_PATH = "/api/users/login"
AUTH_PATHS = frozenset({"/api/users", LOGIN_PATH})
WRITES = frozenset({"POST", "PUT", "DELETE"})
WINDOW_S = 60

Bucket = tuple[str, int]  # (name, requests allowed per window)


class RateLimit:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        redis = app_state(scope).redis
        if redis is None:
            await self.app(scope, receive, send)
            return
        buckets = [self._bucket(scope)]
        per_account = self.settings.rate_limit_login_per_account_per_minute
        if per_account and scope["path"] == LOGIN_PATH and scope["method"] == "POST":
            try:
                body = await edge.read_body(receive, limit=self.settings.max_body_bytes)
            except PayloadTooLarge as exc:
                await edge.send_app_error(send, exc)
                return
            if body is None:  # the client went away
                return
            receive = edge.replay(body, receive)
            if (account := _login_account(body)) is not None:
                buckets.append((f"login:{account}", per_account))
        buckets = [bucket for bucket in buckets if bucket[1]]  # 0: this kind is not limited
        if not buckets:
            await self.app(scope, receive, send)
            return
        window = int(time.time()) // WINDOW_S
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for name, _ in buckets:
                    pipe.incr(f"rl:{name}:{window}")
                    pipe.expire(f"rl:{name}:{window}", WINDOW_S * 2)
                counts = (await pipe.execute())[::2]
        except (RedisError, OSError, TimeoutError):
            log.warning("rate limiter skipped: Redis unavailable")
            await self.app(scope, receive, send)
            return
        if any(count > limit for count, (_, limit) in zip(counts, buckets, strict=True)):
            metrics.HTTP_SHED.labels("rate_limit").inc()
            retry_after = WINDOW_S - int(time.time()) % WINDOW_S
            await edge.send_error(
                send, 429, "too many requests, retry later", headers=[edge.retry_after(retry_after)]
            )
            return
        await self.app(scope, receive, send)

    def _bucket(self, scope: Scope) -> Bucket:
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if scope["path"] in AUTH_PATHS and scope["method"] == "POST":
            return f"auth:{address}", self.settings.rate_limit_auth_per_minute
        try:
            user = edge.viewer_id(scope, self.settings.jwt_secret)
        except Unauthorized:
            user = None  # refused by the app; counted against the address meanwhile
        who = f"user:{user}" if user is not None else f"client:{address}"
        return f"write:{who}", self.settings.rate_limit_writes_per_minute


def _login_account(body: bytes) -> str | None:
    """A digest of the login's email (no address in Redis keys), case and spaces folded so
    `A@x.io ` and `a@x.io` share a bucket; None for a body the app will refuse anyway."""
    try:
        email = orjson.loads(body)["user"]["email"]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return None
    if not isinstance(email, str):
        return None
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
