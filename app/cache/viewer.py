"""Public documents as one viewer sees them: `favorited` and `following` are the only parts
that differ between viewers.

Cached documents are the anonymous view (both flags false), and the flags are set on the way
out: two users never see each other's flags. With the cache on, what sets them is cached per
viewer, not per document: the slugs of everything they favorited and the names of everyone
they follow (`Sets`, one indexed query), stamped with the viewer's own version
(`viewer_changed`, bumped by their favorites and follows) and with what renames the entries
(a slug changed or freed, a new username). A logged-in reader costs PostgreSQL nothing on any
page once their sets are cached, not only on the pages they read before. A viewer with more
than SET_LIMIT of either has no set of that kind: their flags on each page come from one
query over what the page shows, uncached."""

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Select, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import versions as versions_of
from app.cache.store import Cache, Items, changed, dumps
from app.db import Connect
from app.db_reads import ReadConnection
from app.models import Article, Favorite, Follow, User

Load = Callable[[int | None], Awaitable[str | None]]


async def read_through(
    cache: Cache,
    connect: Connect,
    *,
    family: str,
    key: str,
    versions: list[str],
    viewer_id: int | None,
    load: Load,
    items: Items | None = None,
) -> str | None:
    """The document for `viewer_id`: the anonymous one from the cache with the viewer's flags
    set, or, with the cache off, the viewer's own straight from PostgreSQL (`load(viewer)`
    renders it in one statement). None: not found.

    A logged-in reader may be the writer of a moment ago: they use this worker's L1 only if
    it has heard every invalidation published so far (`caught_up`, one GET)."""
    if not cache.available:
        return await load(viewer_id)
    local = viewer_id is None or await cache.caught_up()
    document = await cache.get_or_load(
        family, key, versions, lambda: load(None), items, local=local
    )
    if document is None or viewer_id is None:
        return document
    layout = cache.local.memo(key, document, Layout.of) if cache.local else Layout.of(document)
    if not layout.favorited and not layout.following:
        return document
    sets = await _sets(cache, connect, viewer_id, local=local)
    favorited, following = sets.favorited, sets.following
    if favorited is None or following is None:  # too many to keep: this page's, from SQL
        async with connect() as db:
            seen = await flags(db, viewer_id, slugs=layout.slugs(), usernames=layout.usernames())
        favorited, following = seen.favorited, seen.following
    return layout.personalize(document, favorited, following)


# Beyond this many favorites (or follows), a viewer's flags are asked per page: a set this
# large would cost more to read and parse per request than the page's own query.
SET_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Sets:
    """Everything a viewer favorited (slugs) and follows (usernames); None: more than
    SET_LIMIT, not kept."""

    favorited: frozenset[str] | None
    following: frozenset[str] | None

    @classmethod
    def parse(cls, document: str) -> "Sets":
        stored = orjson.loads(document)
        favorited, following = stored["f"], stored["p"]
        return cls(
            favorited=None if favorited is None else frozenset(favorited),
            following=None if following is None else frozenset(following),
        )


async def _sets(cache: Cache, connect: Connect, viewer_id: int, *, local: bool) -> Sets:
    async def load() -> str:
        async with connect() as db:
            favorited, following = await db.one(
                _flags_statement(page=False), _set_params(viewer_id)
            )
        return dumps({"f": _bounded(favorited), "p": _bounded(following)})

    key = f"sets:{viewer_id}"
    # The viewer's own writes, and renames: a set names slugs and usernames.
    stamp = [versions_of.viewer(viewer_id), versions_of.SLUGS, versions_of.AUTHORS]
    stored = await cache.get_or_load("viewer", key, stamp, load, local=local)
    assert stored is not None  # noqa: S101 - the loader always builds one
    return cache.local.memo(key, stored, Sets.parse) if cache.local else Sets.parse(stored)


def _bounded(names: list[str] | None) -> list[str] | None:
    names = names or []
    return None if len(names) > SET_LIMIT else sorted(names)


def _set_params(viewer_id: int) -> dict[str, int]:
    return {"viewer_id": viewer_id, "limit": SET_LIMIT + 1}


def viewer_changed(session: AsyncSession, viewer_id: int) -> None:
    """Inside a write that changes whom the viewer follows or what they favorite."""
    changed(session, versions_of.viewer(viewer_id))


# A flag as the anonymous document has it: `"favorited": false`, with or without spaces
# (PostgreSQL's json_build_object writes " : "). Inside a JSON string every quote is escaped,
# so this can only match a key of the document itself.
_FLAG = re.compile(r'"(favorited|following)"\s*:\s*(false)')


@dataclass(frozen=True, slots=True)
class Layout:
    """Where an anonymous document's flags stand, and whose they are: the viewer's view is
    the same text with some `false` spliced to `true`, without parsing or re-serialising it
    (computed once per L1 entry)."""

    favorited: tuple[tuple[int, str], ...]  # (offset of `false`, slug)
    following: tuple[tuple[int, str], ...]  # (offset of `false`, username)

    @classmethod
    def of(cls, document: str) -> "Layout":
        articles: list[dict[str, Any]] = []
        people: list[dict[str, Any]] = []
        _collect(orjson.loads(document), articles, people)
        spans: dict[str, list[int]] = {"favorited": [], "following": []}
        for match in _FLAG.finditer(document):
            spans[match[1]].append(match.start(2))
        if len(spans["favorited"]) != len(articles) or len(spans["following"]) != len(people):
            return cls.parsed(articles, people)
        return cls(
            favorited=tuple(zip(spans["favorited"], (a["slug"] for a in articles), strict=True)),
            following=tuple(zip(spans["following"], (p["username"] for p in people), strict=True)),
        )

    @classmethod
    def parsed(cls, articles: list[dict[str, Any]], people: list[dict[str, Any]]) -> "Layout":
        """No offsets (a document this module cannot splice): flags set by parsing it."""
        return cls(
            favorited=tuple((-1, a["slug"]) for a in articles),
            following=tuple((-1, p["username"]) for p in people),
        )

    def slugs(self) -> list[str]:
        return [slug for _, slug in self.favorited]

    def usernames(self) -> list[str]:
        return [username for _, username in self.following]

    def personalize(
        self, document: str, favorited: frozenset[str], following: frozenset[str]
    ) -> str:
        flips = sorted(
            [offset for offset, slug in self.favorited if slug in favorited]
            + [offset for offset, name in self.following if name in following]
        )
        if flips and flips[0] < 0:
            return _personalize_parsed(document, favorited, following)
        parts: list[str] = []
        done = 0
        for offset in flips:
            parts += [document[done:offset], "true"]
            done = offset + len("false")
        parts.append(document[done:])
        return "".join(parts)


def _personalize_parsed(document: str, favorited: frozenset[str], following: frozenset[str]) -> str:
    tree = orjson.loads(document)
    articles: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    _collect(tree, articles, people)
    for article in articles:
        article["favorited"] = article["slug"] in favorited
    for person in people:
        person["following"] = person["username"] in following
    return orjson.dumps(tree).decode()


def _collect(node: object, articles: list[dict[str, Any]], people: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        if "favorited" in node:
            articles.append(node)
        if "following" in node:
            people.append(node)
        for value in node.values():
            _collect(value, articles, people)
    elif isinstance(node, list):
        for value in node:
            _collect(value, articles, people)


@dataclass(frozen=True, slots=True)
class ViewerFlags:
    favorited: frozenset[str]  # slugs
    following: frozenset[str]  # usernames


async def flags(
    db: ReadConnection, viewer_id: int, *, slugs: Iterable[str], usernames: Iterable[str]
) -> ViewerFlags:
    params = {
        "viewer_id": viewer_id,
        "slugs": sorted(set(slugs)),
        "usernames": sorted(set(usernames)),
    }
    favorited, following = await db.one(_flags_statement(page=True), params)
    return ViewerFlags(favorited=frozenset(favorited or ()), following=frozenset(following or ()))


@cache
def _flags_statement(*, page: bool) -> Select[*tuple[Any, ...]]:
    """The slugs a viewer favorited and the usernames they follow: with `page`, only among
    those a page shows (`slugs`, `usernames`); else all of them, each cut at `limit`
    (SET_LIMIT + 1: more is not kept)."""
    viewer = bindparam("viewer_id", type_=BigInteger)
    favorites = (
        select(Article.slug)
        .join(Favorite, Favorite.article_id == Article.id)
        .where(Favorite.user_id == viewer)
    )
    follows = (
        select(User.username)
        .join(Follow, Follow.followee_id == User.id)
        .where(Follow.follower_id == viewer)
    )
    if page:
        favorites = favorites.where(Article.slug == func.any(bindparam("slugs", type_=ARRAY(Text))))
        follows = follows.where(
            User.username == func.any(bindparam("usernames", type_=ARRAY(Text)))
        )
    else:
        limit = bindparam("limit", type_=BigInteger)
        favorites, follows = favorites.limit(limit), follows.limit(limit)
    slugs, names = favorites.subquery(), follows.subquery()
    return select(
        select(func.array_agg(slugs.c.slug)).scalar_subquery(),
        select(func.array_agg(names.c.username)).scalar_subquery(),
    )
