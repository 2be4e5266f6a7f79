"""The Redis clients: the shared one (job queue, rate limits; `noeviction`) and the read
cache's, which may be another instance that evicts (REDIS_CACHE_URL). Timeouts are short on
purpose: a slow Redis must cost milliseconds, never seconds."""

from redis.asyncio import Redis

from app.config import Settings


def make_redis(settings: Settings) -> Redis | None:
    return _client(settings.redis_url, settings)


def make_cache_redis(settings: Settings, shared: Redis | None) -> Redis | None:
    """The cache's client: `shared` (the one of `make_redis`) unless REDIS_CACHE_URL names
    another instance. The caller closes it when it is not `shared`."""
    if settings.redis_cache_url is None or settings.redis_cache_url == settings.redis_url:
        return shared
    return _client(settings.redis_cache_url, settings)


def _client(url: str | None, settings: Settings) -> Redis | None:
    if url is None:
        return None
    return Redis.from_url(
        url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )
