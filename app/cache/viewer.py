"""Public documents as one viewer sees them: `favorited` and `following` are the only parts
that differ between viewers.

Cached documents are the anonymous view (both flags false). For a logged-in viewer one
indexed query finds which of the document's articles they favorited and which of its
people they follow, and the flags are set on the way out: two users never see each other's
flags. With the cache on, that answer is cached too, per viewer and document, stamped with
the document's versions and the viewer's own (`viewer_changed`, bumped by their favorites
and follows): a logged-in reader of a hot page costs PostgreSQL nothing either."""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Select, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.cache import versions
from app.cache.store import Cache, Items, changed, dumps
from app.db import Connect
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
    renders it in one statement). None: not found."""
    if not cache.available:
        return await load(viewer_id)
    document = await cache.get_or_load(family, key, versions, lambda: load(None), items)
    if document is None or viewer_id is None:
        return document
    return await _personalize(cache, connect, key, versions, document, viewer_id)


def viewer_changed(session: AsyncSession, viewer_id: int) -> None:
    """Inside a write that changes whom the viewer follows or what they favorite."""
    changed(session, versions.viewer(viewer_id))


async def _personalize(
    cache: Cache,
    connect: Connect,
    key: str,
    document_versions: list[str],
    document: str,
    viewer_id: int,
) -> str:
    """Set `favorited` on every article and `following` on every profile in the document."""
    tree = orjson.loads(document)
    articles: list[dict[str, Any]] = []
    people: list[dict[str, Any]] = []
    _collect(tree, articles, people)
    if not articles and not people:
        return document
    asked = [sorted({a["slug"] for a in articles}), sorted({p["username"] for p in people})]

    async def load_flags() -> str:
        async with connect() as db:
            seen = await flags(db, viewer_id, slugs=asked[0], usernames=asked[1])
        return dumps({"asked": asked, "f": sorted(seen.favorited), "p": sorted(seen.following)})

    flags_key = f"flags:{viewer_id}:{key}"
    stamp = [*document_versions, versions.viewer(viewer_id)]
    entry = orjson.loads(await cache.get_or_load("viewer", flags_key, stamp, load_flags) or "{}")
    if entry.get("asked") != asked:  # built from another state of the page (a write raced)
        entry = orjson.loads(await load_flags())
    favorited, following = frozenset(entry["f"]), frozenset(entry["p"])
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
    db: AsyncConnection, viewer_id: int, *, slugs: Iterable[str], usernames: Iterable[str]
) -> ViewerFlags:
    params = {
        "viewer_id": viewer_id,
        "slugs": sorted(set(slugs)),
        "usernames": sorted(set(usernames)),
    }
    favorited, following = (await db.execute(_statement(), params)).one()
    return ViewerFlags(favorited=frozenset(favorited or ()), following=frozenset(following or ()))


@cache
def _statement() -> Select[*tuple[Any, ...]]:
    viewer = bindparam("viewer_id", type_=BigInteger)
    slugs = bindparam("slugs", type_=ARRAY(Text))
    usernames = bindparam("usernames", type_=ARRAY(Text))
    favorited = (
        select(func.array_agg(Article.slug))
        .join(Favorite, Favorite.article_id == Article.id)
        .where(Favorite.user_id == viewer, Article.slug == func.any(slugs))
    )
    following = (
        select(func.array_agg(User.username))
        .join(Follow, Follow.followee_id == User.id)
        .where(Follow.follower_id == viewer, User.username == func.any(usernames))
    )
    return select(favorited.scalar_subquery(), following.scalar_subquery())
