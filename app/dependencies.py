"""Every FastAPI dependency, as `Annotated` aliases. What they hand out comes from the
lifespan's typed state (app/state.py), so tests build theirs and pass it in."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from fastapi.security import APIKeyHeader
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.types import Scope

from app import transaction
from app.articles import cursors
from app.cache.store import Cache
from app.config import Settings
from app.db import Connect
from app.errors import Unauthorized
from app.middleware import edge
from app.middleware.idempotency import SESSION_SCOPE_KEY
from app.models import User
from app.responses import public_read
from app.schemas import Storable
from app.security import PasswordHashing, read_token
from app.state import AppState, app_state
from app.users import service as users


async def get_state(request: Request) -> AppState:
    return app_state(request.scope)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_engine(state: StateDep) -> AsyncEngine:
    return state.engine


async def get_redis(state: StateDep) -> Redis | None:
    return state.redis


async def get_hashing(state: StateDep) -> PasswordHashing:
    return state.hashing


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
RedisDep = Annotated[Redis | None, Depends(get_redis)]
HashingDep = Annotated[PasswordHashing, Depends(get_hashing)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one transaction: committed (with its after-effects, app/transaction.py)
    before the response is sent, or rolled back.

    A request with an Idempotency-Key arrives with its transaction already open: the
    idempotency middleware commits it together with the stored response.
    """
    opened: AsyncSession | None = request.scope.get(SESSION_SCOPE_KEY)
    if opened is not None:
        yield opened
        return
    state = app_state(request.scope)
    async with transaction.begin(state.sessions, state) as session:
        yield session


# scope="function": the commit runs before the response goes out, not after it.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    auto_error=False,
    description="`Token <jwt>` as returned by login",
)


async def _maybe_viewer_id(
    request: Request, _: Annotated[str | None, Depends(_authorization)]
) -> int | None:
    # The header parameter only documents the scheme; the edge reads the token, once.
    return edge.viewer_id(request.scope, app_state(request.scope).settings.jwt_secret)


async def _viewer_id(viewer_id: Annotated[int | None, Depends(_maybe_viewer_id)]) -> int:
    return signed_in(viewer_id)


def signed_in(viewer_id: int | None) -> int:
    """The viewer's id; Unauthorized (401) for an anonymous request."""
    if viewer_id is None:
        raise Unauthorized("authentication required")
    return viewer_id


# Read endpoints only need the id a valid token vouches for: no query to load the user.
MaybeViewerId = Annotated[int | None, Depends(_maybe_viewer_id)]
ViewerId = Annotated[int, Depends(_viewer_id)]


async def _current_user(request: Request, viewer_id: ViewerId, session: SessionDep) -> User:
    """The token's user, as writes need it: loaded, and the token's version checked against
    the user's, so that a password change revokes every token issued before it (401).

    Routes that take only the viewer's id (ViewerId, MaybeViewerId, ReadsDep: the flags of
    public reads, the feed, one's own imports and webhooks) skip this query, and so this
    check: there a revoked token works until it expires (JWT_TTL_SECONDS).
    """
    user = await users.get_by_id(session, viewer_id)
    if user.token_version != _token_version(request):
        raise Unauthorized("token revoked by a password change: log in again")
    return user


def _token_version(request: Request) -> int:
    # The edge keeps only the id: a write decodes the token (valid, or it would not be here)
    # once more for its version.
    authorization = edge.header(request.scope, b"authorization") or b""
    token = authorization.decode("latin-1").partition(" ")[2].strip()
    return read_token(token, secret=app_state(request.scope).settings.jwt_secret)[1]


CurrentUser = Annotated[User, Depends(_current_user)]


@dataclass(frozen=True, slots=True)
class Reads:
    """What a public read needs, as one dependency (each dependency FastAPI solves costs
    CPU on every request): who asks (None: anonymous, flags all false), how to open a pooled
    connection (only on a cache miss), and the cache."""

    viewer_id: int | None
    connect: Connect
    cache: Cache
    if_none_match: str | None  # the client's cached copy (HTTP caching, app/responses.py)

    def answer(self, document: str) -> Response:
        """The document, with an ETag, Cache-Control for who asked, or 304."""
        return public_read(
            document, if_none_match=self.if_none_match, personal=self.viewer_id is not None
        )

    @classmethod
    def of(cls, scope: Scope) -> "Reads":
        """The request's reader: Unauthorized (401) for a token that is not valid."""
        state = app_state(scope)
        return cls(
            viewer_id=edge.viewer_id(scope, state.settings.jwt_secret),
            connect=state.connect,
            cache=state.cache,
            if_none_match=if_none_match(scope),
        )


async def _reads(request: Request) -> Reads:
    # One dependency node for the hottest routes (FastAPI solves each node per request): the
    # token is read here, not through MaybeViewerId; OPTIONAL_AUTH documents it.
    return Reads.of(request.scope)


def if_none_match(scope: Scope) -> str | None:
    # Straight from the scope: `request.headers` would build a header mapping per request.
    value = edge.header(scope, b"if-none-match")
    return None if value is None else value.decode("latin-1")


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


@dataclass(frozen=True, slots=True)
class ListPage:
    """A page of an article list: `limit`, and `offset` or `cursor` (app/articles/pages.py),
    with the key cursors are signed with."""

    limit: int
    offset: int
    cursor: str | None
    cursor_key: bytes

    @classmethod
    def of(cls, scope: Scope, *, limit: int, offset: int, cursor: str | None) -> "ListPage":
        key = cursors.signing_key(app_state(scope).settings.jwt_secret)
        return cls(limit=limit, offset=offset, cursor=cursor, cursor_key=key)


Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Where the page starts: the `nextCursor` of the page before, as is "
        "(an opaque, signed value; any other is 422). Its cost does not grow with depth.",
    ),
]


async def _list_page(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = 20,
    offset: Annotated[
        int,
        Query(
            ge=0,
            # Documented, checked by the service: its 422 points to `cursor` (pages.py).
            json_schema_extra={"maximum": 10_000},
            description="Rows to skip; at most 10000, deeper pages take `cursor` (422 beyond)",
        ),
    ] = 0,
    cursor: Cursor = None,
) -> ListPage:
    return ListPage.of(request.scope, limit=limit, offset=offset, cursor=cursor)


ListPageDep = Annotated[ListPage, Depends(_list_page)]

Slug = Annotated[str, Path(max_length=300), Storable]
Username = Annotated[str, Path(max_length=64), Storable]
Filter = Annotated[str | None, Query(max_length=200), Storable]

# Routes where a token is optional say so in the OpenAPI document ("{}" = anonymous allowed).
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}, {"Token": []}]}
