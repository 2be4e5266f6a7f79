"""The plain public reads, routed without FastAPI's machinery.

A public read spends about as much CPU in FastAPI's routing, parameter validation and
dependency solving as in its own work (bench/README.md, "Where the time goes"). So the hottest
GETs (one article, its comments, a profile, the tags, a page of the list or of the feed) have
a second route each, first in the router, that takes only the plain case: a path parameter
and a query whose every value is plainly valid, by the same rules the FastAPI route declares
(read from the same `Annotated` parameters; the numbers' bounds are named below). It answers with
the same function the FastAPI route calls (`answer_*`), through the app's own exception
handlers. Anything else — a value out of range, an unknown or repeated query parameter,
`fields=`, HEAD — is not matched here and goes on to the FastAPI route, which validates and
answers as the OpenAPI document says. One behaviour, whichever route serves:
tests/test_hot_reads.py compares the two.
"""

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, compile_path
from starlette.types import Receive, Scope, Send

from app.articles import slugs
from app.articles.router import Search, answer_article, answer_feed, answer_list
from app.comments.router import answer_comments
from app.dependencies import (
    MAX_PAGE_LIMIT,
    Cursor,
    Filter,
    ListPage,
    Reads,
    Slug,
    Username,
    if_none_match,
    signed_in,
)
from app.middleware import edge
from app.profiles.router import answer_profile
from app.schemas import Storable, is_storable
from app.state import app_state
from app.tags.router import answer_tags

Params = dict[str, str]
Check = Callable[[str], bool]
Answer = Callable[[Scope, Params], Awaitable[Response]]

_DIGITS = re.compile(r"[0-9]{1,9}")  # longer numbers are left to FastAPI's validation


def _text(parameter: Any) -> Check:
    """The rules of an `Annotated` string parameter of the FastAPI routes: its max_length,
    and Storable when it has it."""
    rules = parameter.__metadata__
    (max_length,) = (
        rule.max_length
        for param in rules
        for rule in getattr(param, "metadata", ())
        if getattr(rule, "max_length", None) is not None  # annotated_types.MaxLen
    )
    storable = Storable in rules
    return lambda value: len(value) <= max_length and (not storable or is_storable(value))


def _number(low: int, high: int) -> Check:
    return lambda value: _DIGITS.fullmatch(value) is not None and low <= int(value) <= high


# The FastAPI routes' own rules (app/dependencies.py, app/articles/router.py).
_USERNAME, _FILTER, _SEARCH, _CURSOR = _text(Username), _text(Filter), _text(Search), _text(Cursor)
_SLUG = _text(Slug)


def _slug(value: str) -> bool:
    # /api/articles/feed is another route's path, never a slug (app/articles/slugs.py).
    return value not in slugs.RESERVED and _SLUG(value)


_LIST_QUERY: Mapping[str, Check] = {
    "limit": _number(1, MAX_PAGE_LIMIT),
    "offset": _number(0, 2**31 - 1),
    "cursor": _CURSOR,
    "tag": _FILTER,
    "author": _FILTER,
    "favorited": _FILTER,
    "q": _SEARCH,
}
_FEED_QUERY = {name: _LIST_QUERY[name] for name in ("limit", "offset", "cursor")}


class HotRead(BaseRoute):
    """A GET whose path and query pass `checks`, answered by `answer`, or no match."""

    def __init__(
        self,
        path_format: str,
        answer: Answer,
        checks: Mapping[str, Check],
        query: Mapping[str, Check] | None = None,
    ) -> None:
        self.path_format = path_format  # the route label of metrics and logs
        self.path = path_format
        self._regex = compile_path(path_format)[0]
        self._answer = answer
        self._checks = checks
        self._query = query or {}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET":
            return Match.NONE, {}
        found = self._regex.match(_route_path(scope))
        if found is None:
            return Match.NONE, {}
        params: Params = found.groupdict()
        if not all(check(params[name]) for name, check in self._checks.items()):
            return Match.NONE, {}
        query = _plain_query(scope["query_string"], self._query)
        if query is None:
            return Match.NONE, {}
        return Match.FULL, {"route": self, "path_params": params | query}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(scope, scope["path_params"])
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)


def _route_path(scope: Scope) -> str:
    # The path below the app's mount point, as Starlette's router matches it.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _plain_query(raw: bytes, allowed: Mapping[str, Check]) -> Params | None:
    """The query's parameters if each is known, given once and plainly valid; else None.
    (Parsed as Starlette parses it: latin-1, then percent-decoding as UTF-8.)"""
    if not raw:
        return {}
    found: Params = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        check = allowed.get(name)
        if check is None or name in found or not check(value):
            return None
        found[name] = value
    return found


async def _article(scope: Scope, params: Params) -> Response:
    return await answer_article(Reads.of(scope), scope, slug=params["slug"])


async def _comments(scope: Scope, params: Params) -> Response:
    return await answer_comments(Reads.of(scope), scope, slug=params["slug"])


async def _profile(scope: Scope, params: Params) -> Response:
    return await answer_profile(Reads.of(scope), username=params["username"])


async def _tags(scope: Scope, _: Params) -> Response:
    return await answer_tags(app_state(scope), if_none_match=if_none_match(scope))


async def _list(scope: Scope, params: Params) -> Response:
    return await answer_list(
        Reads.of(scope),
        _page(scope, params),
        tag=params.get("tag"),
        author=params.get("author"),
        favorited=params.get("favorited"),
        q=params.get("q"),
    )


async def _feed(scope: Scope, params: Params) -> Response:
    state = app_state(scope)
    viewer_id = signed_in(edge.viewer_id(scope, state.settings.jwt_secret))
    return await answer_feed(state, _page(scope, params), viewer_id=viewer_id)


def _page(scope: Scope, params: Params) -> ListPage:
    limit, offset = int(params.get("limit", 20)), int(params.get("offset", 0))
    return ListPage.of(scope, limit=limit, offset=offset, cursor=params.get("cursor"))


def routes() -> list[BaseRoute]:
    """The hot reads' routes, to go first in the app's router."""
    return [
        HotRead("/api/articles", _list, {}, _LIST_QUERY),
        HotRead("/api/articles/feed", _feed, {}, _FEED_QUERY),
        HotRead("/api/articles/{slug}", _article, {"slug": _slug}),
        HotRead("/api/articles/{slug}/comments", _comments, {"slug": _slug}),
        HotRead("/api/profiles/{username}", _profile, {"username": _USERNAME}),
        HotRead("/api/tags", _tags, {}),
    ]
