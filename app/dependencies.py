"""Every FastAPI dependency, as `Annotated` aliases. State comes from the lifespan
(`request.state`), so tests can build an app from their own Settings and override these."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import queue
from app.cache import Cache, take_changes
from app.config import Settings
from app.db import Connect
from app.errors import Unauthorized
from app.idempotency import SESSION_SCOPE_KEY
from app.models import User
from app.observability import context
from app.schemas import Storable
from app.security import PasswordHashing, read_user_id
from app.users import service as users


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return sessions


async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.state.engine
    return engine


async def get_redis(request: Request) -> Redis | None:
    redis: Redis | None = request.state.redis
    return redis


async def get_hashing(request: Request) -> PasswordHashing:
    hashing: PasswordHashing = request.state.hashing
    return hashing


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
HashingDep = Annotated[PasswordHashing, Depends(get_hashing)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
RedisDep = Annotated[Redis | None, Depends(get_redis)]


async def get_cache(request: Request) -> Cache:
    cache: Cache = request.state.cache
    return cache


CacheDep = Annotated[Cache, Depends(get_cache)]


async def get_session(
    request: Request, sessions: SessionMakerDep, cache: CacheDep
) -> AsyncIterator[AsyncSession]:
    """The request's one transaction: committed before the response is sent, or rolled back.

    A request with an Idempotency-Key arrives with its transaction already open: the
    idempotency middleware commits it together with the stored response (app/idempotency.py).
    """
    opened: AsyncSession | None = request.scope.get(SESSION_SCOPE_KEY)
    if opened is not None:
        yield opened
        return
    async with sessions() as session:
        try:
            yield session
        except Exception:
            queue.discard(session)
            await session.rollback()
            raise
        await session.commit()
        await cache.publish(take_changes(session))  # after commit, before the response
        # Only after commit: a job never refers to rolled-back rows (app/queue.py).
        await queue.flush(
            session, getattr(request.state, "queue", None), request.app.state.settings
        )


# scope="function": the commit runs before the response goes out, not after it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_connect(request: Request) -> Connect:
    """Opens a pooled autocommit connection (app/db.py `make_engine`) for single-statement
    reads, only when needed: a read answered from the cache never takes a connection."""
    connect: Connect = request.state.connect
    return connect


ConnectDep = Annotated[Connect, Depends(get_connect)]


_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    auto_error=False,
    description="`Token <jwt>` as returned by login",
)


async def _maybe_viewer_id(
    request: Request, header: Annotated[str | None, Depends(_authorization)]
) -> int | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme != "Token" or not token:  # RealWorld sends "Authorization: Token <jwt>"
        raise Unauthorized("expected 'Authorization: Token <jwt>'")
    settings = await get_settings(request)  # not a dependency: one node less per request
    viewer_id = read_user_id(token.strip(), secret=settings.jwt_secret)
    context.set_user_id(viewer_id)  # every log line of this request names its user
    return viewer_id


async def _viewer_id(viewer_id: Annotated[int | None, Depends(_maybe_viewer_id)]) -> int:
    if viewer_id is None:
        raise Unauthorized("authentication required")
    return viewer_id


# Read endpoints only need the id a valid token vouches for: no query to load the user.
MaybeViewerId = Annotated[int | None, Depends(_maybe_viewer_id)]
ViewerId = Annotated[int, Depends(_viewer_id)]


async def _current_user(viewer_id: ViewerId, session: SessionDep) -> User:
    return await users.get_by_id(session, viewer_id)


CurrentUser = Annotated[User, Depends(_current_user)]


@dataclass(frozen=True, slots=True)
class Reads:
    """What a public read needs, as one dependency (each dependency FastAPI solves costs
    CPU on every request): who asks (None: anonymous, flags all false), how to open a pooled
    connection (only on a cache miss), and the cache."""

    viewer_id: int | None
    connect: Connect
    cache: Cache


async def _reads(request: Request, viewer_id: MaybeViewerId) -> Reads:
    state = request.state
    return Reads(viewer_id=viewer_id, connect=state.connect, cache=state.cache)


ReadsDep = Annotated[Reads, Depends(_reads)]


MAX_PAGE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


async def _page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(_page)]

Slug = Annotated[str, Path(max_length=300), Storable]
Username = Annotated[str, Path(max_length=64), Storable]
Filter = Annotated[str | None, Query(max_length=200), Storable]

# Routes where a token is optional say so in the OpenAPI document ("{}" = anonymous allowed).
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {"Token": []}]}
