"""Per-client rate limits in Redis, so they hold across every worker and machine.

Sign-up and login are limited per client address (they are the brute-force and
credential-stuffing surface, and argon2 makes each attempt expensive for us too); other
writes per user (per address without a token). Over the limit: 429 with Retry-After.

Fixed windows: one INCR and one EXPIRE per request, pipelined (one round trip). A library
(`limits`) would bring a second Redis client for its async storage for the same two commands.
Redis trouble fails open: the limiter is protection, not a dependency worth an outage.
"""

import logging
import time

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.errors import Unauthorized
from app.middleware import edge
from app.observability import metrics
from app.state import app_state

log = logging.getLogger("conduit.ratelimit")
AUTH_PATHS = frozenset({"/api/users", "/api/users/login"})
WRITES = frozenset({"POST", "PUT", "DELETE"})
WINDOW_S = 60


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
        bucket, limit = self._bucket(scope)
        if limit == 0:  # this kind of request is not limited
            await self.app(scope, receive, send)
            return
        window = int(time.time()) // WINDOW_S
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incr(f"rl:{bucket}:{window}")
                pipe.expire(f"rl:{bucket}:{window}", WINDOW_S * 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            log.warning("rate limiter skipped: Redis unavailable")
            await self.app(scope, receive, send)
            return
        if count > limit:
            metrics.HTTP_SHED.labels("rate_limit").inc()
            retry_after = WINDOW_S - int(time.time()) % WINDOW_S
            await edge.send_error(
                send, 429, "too many requests, retry later", headers=[edge.retry_after(retry_after)]
            )
            return
        await self.app(scope, receive, send)

    def _bucket(self, scope: Scope) -> tuple[str, int]:
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
