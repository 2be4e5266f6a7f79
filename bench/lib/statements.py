"""The API's own read statements, compiled once for plain psycopg: what the floor
(bench/bare_app.py) runs instead of the API.

Each statement is built by the API's code with marker values in place of what a request
supplies (slug, username, viewer, page size); the markers then name the parameters to fill in
per request. The article list and the single article come from app/articles/queries.py's
builders. Comments, profiles and tags build their statements inside their services, so those
services are called once on a stand-in connection that keeps each statement it is handed and
answers at once (no rows, or the `scalar` it was given).
"""

from collections.abc import Coroutine, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Self, TypeVar, cast

from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.sql import ClauseElement

from app.articles import queries
from app.cache.store import Cache
from app.comments import service as comments
from app.db import Connect
from app.errors import NotFound
from app.profiles import service as profiles
from app.tags import service as tags

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
T = TypeVar("T")
Params = Mapping[str, object] | None

SLUG, USERNAME = "\x00slug", "\x00username"  # no real slug or username holds a NUL
VIEWER, LIMIT = -1, -2  # ids and sizes are positive
_FILLS: dict[object, str] = {
    SLUG: "slug",
    USERNAME: "username",
    VIEWER: "viewer_id",
    LIMIT: "limit",
}


@dataclass(frozen=True)
class Statement:
    sql: str  # as SQLAlchemy sends it through psycopg, `%(name)s` parameters
    params: dict[str, object]  # every parameter's value, markers included
    fills: dict[str, str]  # parameter name -> what a request puts there ("slug", ...)

    def bind(self, **values: object) -> dict[str, object]:
        """The parameters with the request's values in place of the markers."""
        return self.params | {name: values[what] for name, what in self.fills.items()}


def compiled(statement: ClauseElement, params: Params = None) -> Statement:
    """`statement` compiled as the API's engine compiles it; `params` (a builder's) override
    the values bound inside it."""
    done = statement.compile(dialect=_DIALECT)
    values = dict(done.params) | dict(params or {})
    fills = {
        name: _FILLS[value]
        for name, value in values.items()
        if isinstance(value, str | int) and value in _FILLS
    }
    return Statement(str(done), values, fills)


def page(filters: queries.Filters, viewer_id: int | None) -> Statement:
    return compiled(*queries.page(filters, viewer_id, queries.Window(limit=LIMIT)))


def single(viewer_id: int | None) -> Statement:
    return compiled(*queries.single(SLUG, viewer_id))


def comments_of(viewer_id: int | None) -> Statement:
    recorder = _Recorder(scalar="{}")  # a document: found, so no lookup of a moved slug
    _run(comments.list_comments(recorder.connect, Cache(None), slug=SLUG, viewer_id=viewer_id))
    (statement,) = recorder.statements
    return statement


def profile(viewer_id: int | None) -> Statement:
    recorder = _Recorder()
    with suppress(NotFound):  # the stand-in has no such user
        _run(profiles.get(recorder.connect, Cache(None), username=USERNAME, viewer_id=viewer_id))
    (statement,) = recorder.statements
    return statement


def tag_names() -> Statement:
    recorder = _Recorder()
    _run(tags.list_tags(recorder.connect, Cache(None)))
    (statement,) = recorder.statements
    return statement


class _NoRows(list[Any]):
    def first(self) -> None:
        return None


class _Recorder:
    """Stands in for the API's pooled read connection (SQLAlchemy's `AsyncConnection`, or
    the driver's `ReadConnection` of app/db_reads.py): keeps each statement, finds no rows;
    `scalar` answers `scalar`."""

    def __init__(self, scalar: object = None) -> None:
        self.statements: list[Statement] = []
        self._scalar = scalar
        self.connect = cast(Connect, lambda: self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def scalar(self, statement: ClauseElement, params: Params = None) -> object:
        self.statements.append(compiled(statement, params))
        return self._scalar

    async def all(self, statement: ClauseElement, params: Params = None) -> _NoRows:
        self.statements.append(compiled(statement, params))
        return _NoRows()

    execute = scalars = all

    async def first(self, statement: ClauseElement, params: Params = None) -> None:
        await self.all(statement, params)


def _run(call: Coroutine[Any, Any, T]) -> T:
    """A service call on the recorder runs to its end at the first step: nothing in it
    waits (no event loop needed, so this works at import time inside a server's loop)."""
    try:
        call.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    call.close()
    raise RuntimeError("a recorded service call waited for something")
