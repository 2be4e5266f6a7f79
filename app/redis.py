"""The shared Redis client (cache and job queue). Timeouts are short on purpose: a slow
Redis must cost milliseconds, never seconds."""

from redis.asyncio import Redis

from app.config import Settings


def make_redis(settings: Settings) -> Redis | None:
    if settings.redis_url is None:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )
