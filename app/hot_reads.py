"""The plain public reads, answered without FastAPI's machinery.

A public read spends about as much CPU in FastAPI's routing, parameter validation and
dependency solving, and in the layers a request passes on its way to the router, as in its
own work (bench/README.md, "Where the time goes"). So the hottest GETs (one article, its
comments, a profile, the tags, a page of the list or of the feed) are answered by one ASGI
layer just inside the request edge (`HotReads`), which takes only the plain case: a path
parameter and a query whose every value is plainly valid, by the same rules the FastAPI route
declares (read from the same `Annotated` parameters; the numbers' bounds are named below). It
answers with the same function the FastAPI route calls (`answer_*`), through the app's own
exception handlers. Anything else — a value out of range, an unknown or repeated query
parameter, `fields=`, HEAD — is not matched here and goes on to the FastAPI route, which
validates and answers as the OpenAPI document says. One behaviour, whichever answers:
tests/test_hot_reads.py compares the two.

The layers skipped are those with nothing to do for a GET: rate limits and idempotency keys
(writes), streamed uploads (imports), Starlette's and FastAPI's exception layers (their
handlers are the ones `HotReads` calls), FastAPI's body limit and exit stack (no body, no
dependencies here).
"""

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import Response
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

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
from app.observability import tracing
from app.profiles.router import answer_profile
from app.schemas import Storable, is_storable
from app.state import app_state
from app.tags.router import answer_tags

Params = dict[str, str]
Check = Callable[[str], bool]
Answer = Callable[[Scope, Params], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]  # as FastAPI keeps them

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


class HotRead:
    """A GET whose path and query pass `checks`, answered by `answer`."""

    def __init__(
        self,
        path_format: str,
        answer: Answer,
        checks: Mapping[str, Check],
        query: Mapping[str, Check] | None = None,
    ) -> None:
        self.path_format = path_format  # the route label of metrics and logs
        self._regex = compile_path(path_format)[0]
        self.answer = answer
        self._checks = checks
        self._query = query or {}

    def match(self, path: str, query_string: bytes) -> Params | None:
        """The path's and query's parameters if the request is this read's plain case."""
        found = self._regex.match(path)
        if found is None:
            return None
        params: Params = found.groupdict()
        if not all(check(params[name]) for name, check in self._checks.items()):
            return None
        query = _plain_query(query_string, self._query)
        return None if query is None else params | query


class HotReads:
    """The layer that answers the plain case of the hot reads (module docstring); every other
    request goes on to `app`. It sits outside Starlette's exception layers (app/main.py), so it
    answers an exception as they would: by the handler the app has for it, and one without
    (or whose handler declines it) by the app's 500 handler, then raises it on, as
    Starlette's ServerErrorMiddleware does, for the server's log and the trace."""

    def __init__(self, app: ASGIApp, *, handlers: Mapping[Any, Handler]) -> None:
        self.app = app
        self.reads = reads()
        self._handlers = handlers  # the FastAPI app's, read when an exception is raised

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path, query_string = _route_path(scope), scope["query_string"]
            for read in self.reads:
                if (params := read.match(path, query_string)) is not None:
                    scope["route"], scope["path_params"] = read, params
                    tracing.route_selected(scope, read.path_format)
                    await self._answer(read, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, read: HotRead, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await read.answer(scope, scope["path_params"])
        except Exception as exc:
            await self._fail(exc, scope, receive, send)
        else:
            await response(scope, receive, send)

    async def _fail(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if (handler := self._handler(exc)) is not None:
            try:
                response = await _handled(handler, request, exc)
            except Exception as declined:  # e.g. a DBAPIError that is a bug, not an outage
                exc = declined
            else:
                await response(scope, receive, send)
                return
        if (server_error := self._handlers.get(Exception)) is None:
            raise exc
        await (await _handled(server_error, request, exc))(scope, receive, send)
        raise exc

    def _handler(self, exc: Exception) -> Handler | None:
        for kind in type(exc).__mro__:
            if kind is not Exception and (handler := self._handlers.get(kind)) is not None:
                return handler
        return None


async def _handled(handler: Handler, request: Request, exc: Exception) -> Response:
    answered = handler(request, exc)
    return await answered if inspect.isawaitable(answered) else answered


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


def reads() -> list[HotRead]:
    """The hot reads, in the order they are tried."""
    return [
        HotRead("/api/articles", _list, {}, _LIST_QUERY),
        HotRead("/api/articles/feed", _feed, {}, _FEED_QUERY),
        HotRead("/api/articles/{slug}", _article, {"slug": _slug}),
        HotRead("/api/articles/{slug}/comments", _comments, {"slug": _slug}),
        HotRead("/api/profiles/{username}", _profile, {"username": _USERNAME}),
        HotRead("/api/tags", _tags, {}),
    ]
