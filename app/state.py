"""The application's state: what the lifespan builds once per process, typed, and the one
accessor every reader uses (dependencies and pure ASGI middleware alike).

Starlette copies the lifespan's dict into each request's `scope["state"]`; this state is
one frozen value under one key of it. Tests build their own (`dataclasses.replace`) and
hand it in the same way (tests/conftest.py `serve_with_state`).
"""

from dataclasses import dataclass

from redis.asyncio import Redis
from saq.queue import Queue
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Scope

from app.cache.store import Cache
from app.config import Settings
from app.db import Connect
from app.replicas import WritePositions
from app.security import PasswordHashing

STATE_KEY = "conduit"


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine  # autocommit: a read takes a pooled connection as it is
    # Reads open connections through this, not the engine: tests hand in their own
    # transaction's connection here.
    connect: Connect
    sessions: async_sessionmaker[AsyncSession]  # transactions: app/transaction.py
    redis: Redis | None
    jobs: Queue | None  # SAQ, over the same Redis client
    cache: Cache
    hashing: PasswordHashing
    # With read replicas: where commits record their WAL position (app/replicas.py).
    positions: WritePositions | None = None


def as_lifespan_state(state: AppState) -> dict[str, AppState]:
    return {STATE_KEY: state}


def app_state(scope: Scope) -> AppState:
    state: AppState = scope["state"][STATE_KEY]
    return state
