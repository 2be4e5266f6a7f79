"""Statement builders for the article read path.

Every read is ONE statement that returns the finished JSON document: PostgreSQL joins the
author, evaluates the viewer's `favorited`/`following` as indexed EXISTS, reads the count
from the counters (app/counts) and renders the RealWorld shape (app/json_sql.py). Python passes
the text through: no per-row objects, no re-serialisation, one round trip (docs/ARCHITECTURE.md,
"Read path").
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    ScalarSelect,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

from app import json_sql
from app.articles import search as search_sql
from app.articles.cursors import Position
from app.counts import queries as counts
from app.models import Article, Favorite, FavoriteCountShard, Follow, User

# Statements are built once per shape (which filters, anonymous or not) and cached, with
# bound parameters for the values: building a SQLAlchemy expression of this size costs more
# CPU than PostgreSQL spends running it.
_VIEWER = bindparam("viewer_id", type_=BigInteger)


@dataclass(frozen=True, slots=True)
class Filters:
    """What `GET /articles` and the feed filter by; None means "not filtered by this"."""

    tag: str | None = None
    author: str | None = None
    favorited_by: str | None = None
    followed_by: int | None = None  # the feed: authors this user follows
    q: str | None = None  # full-text search (app/articles/search.py)

    def signature(self) -> str:
        """What a cursor of this list is bound to (app/articles/cursors.py)."""
        return orjson.dumps(
            [self.tag, self.author, self.favorited_by, self.followed_by, self.q]
        ).decode()


@dataclass(frozen=True, slots=True)
class Window:
    """Which slice of the list: `offset` rows skipped, or the rows after a cursor's."""

    limit: int
    offset: int = 0
    after: Position | None = None


def page(
    filters: Filters, viewer_id: int | None, window: Window
) -> tuple[Select[str, int, str], dict[str, object]]:
    """(`{"articles": [...], "articlesCount": n}`, the rows on the page, the last row's
    position as JSON `[created_at, id, tier]`), with its parameters. Newest first; a search
    ranks title matches first (app/articles/search.py)."""
    after = window.after
    statement = _page(
        tag=filters.tag is not None,
        author=filters.author is not None,
        favorited_by=filters.favorited_by is not None,
        followed_by=filters.followed_by is not None,
        search=filters.q is not None,
        after_tier=None if after is None else after.tier,
        viewer=viewer_id is not None,
    )
    params: dict[str, object] = {
        "tag": filters.tag,
        "tags": [filters.tag],
        "author": filters.author,
        "favorited_by": filters.favorited_by,
        "followed_by": filters.followed_by,
        "q": filters.q,
        "viewer_id": viewer_id,
        "limit": window.limit,
        "offset": window.offset,
        "after_created_at": None if after is None else after.created_at,
        "after_id": None if after is None else after.id,
    }
    return statement, params


def single(slug: str, viewer_id: int | None) -> tuple[Select[str], dict[str, object]]:
    """`{"article": {...}}` for one slug (no row if unknown), with its parameters."""
    return _single(viewer=viewer_id is not None), {"slug": slug, "viewer_id": viewer_id}


@cache
def _single(*, viewer: bool) -> Select[str]:
    document = func.json_build_object(
        json_sql.key("article"), _article_json(viewer=viewer, with_body=True)
    )
    return (
        select(cast(document, Text))
        .join_from(Article, User, User.id == Article.author_id)
        .where(Article.slug == bindparam("slug", type_=Text))
    )


@cache
def _page(
    *,
    tag: bool,
    author: bool,
    favorited_by: bool,
    followed_by: bool,
    search: bool,
    after_tier: int | None,
    viewer: bool,
) -> Select[str, int, str]:
    clauses = _where(tag=tag, author=author, favorited_by=favorited_by, followed_by=followed_by)
    rows = _rows(clauses, search=search, after_tier=after_tier).cte("page")
    order = (rows.c.tier, rows.c.created_at.desc(), rows.c.id.desc())
    # The documents are built for the page's rows only, not for the rows an offset skips.
    in_order = aggregate_order_by(_article_json(viewer=viewer, with_body=False), *order)
    articles = (
        select(func.coalesce(func.json_agg(in_order), literal_column("'[]'::json")))
        .select_from(rows)
        .join(Article, Article.id == rows.c.id)
        .join(User, User.id == Article.author_id)
        .scalar_subquery()
    )
    document: list[ColumnElement[Any]] = [json_sql.key("articles"), articles]
    found = search_sql.counted(*clauses) if search else None
    if found is not None:
        document += [
            json_sql.key("articlesCount"), func.least(found.c.n, search_sql.COUNT_LIMIT),
            json_sql.key("articlesCountExact"), found.c.n <= search_sql.COUNT_LIMIT,
        ]  # fmt: skip
    else:
        count = _count(tag=tag, author=author, favorited_by=favorited_by, followed_by=followed_by)
        document += [json_sql.key("articlesCount"), count]
    on_page = select(func.count()).select_from(rows).scalar_subquery()
    last = (
        select(func.json_build_array(rows.c.created_at, rows.c.id, rows.c.tier))
        .order_by(rows.c.tier.desc(), rows.c.created_at, rows.c.id)
        .limit(1)
        .scalar_subquery()
    )
    statement = select(cast(func.json_build_object(*document), Text), on_page, cast(last, Text))
    return statement if found is None else statement.select_from(found)


def _rows(
    clauses: list[ColumnElement[bool]], *, search: bool, after_tier: int | None
) -> Select[*tuple[Any, ...]]:
    """The page's (tier, created_at, id), in order. A search is two lists one after the
    other (tier 0, then tier 1), a plain list one; each is read newest first and stops
    after the page's rows."""
    parts = []
    for tier in (0, 1) if search else (0,):
        if after_tier is not None and tier < after_tier:
            continue  # the cursor is past this tier
        matching = search_sql.tier_clauses(tier) if search else []
        keyset = _after() if after_tier == tier else []
        part = (
            select(literal(tier).label("tier"), Article.created_at, Article.id)
            .where(*clauses, *matching, *keyset)
            .order_by(Article.created_at.desc(), Article.id.desc())
        )
        parts.append(part)
    if len(parts) == 1:
        return parts[0].limit(_LIMIT).offset(_OFFSET)
    tiers = union_all(*(part.limit(_LIMIT + _OFFSET) for part in parts)).subquery("tiers")
    return (
        select(tiers)
        .order_by(tiers.c.tier, tiers.c.created_at.desc(), tiers.c.id.desc())
        .limit(_LIMIT)
        .offset(_OFFSET)
    )


_LIMIT = bindparam("limit", type_=Integer)
_OFFSET = bindparam("offset", type_=Integer)


def _after() -> list[ColumnElement[bool]]:
    """Rows after the cursor's in (created_at DESC, id DESC) order; `created_at <=` alone
    is what the (created_at DESC, id DESC) and (author_id, created_at DESC) indexes start
    their scan from."""
    created_at = bindparam("after_created_at", type_=DateTime(timezone=True))
    last_id = bindparam("after_id", type_=BigInteger)
    return [
        Article.created_at <= created_at,
        or_(Article.created_at < created_at, Article.id < last_id),
    ]


def _author_id() -> ScalarSelect[int]:
    return select(User.id).where(User.username == bindparam("author", type_=Text)).scalar_subquery()


def _fan_id() -> ScalarSelect[int]:
    fan = bindparam("favorited_by", type_=Text)
    return select(User.id).where(User.username == fan).scalar_subquery()


def _where(
    *, tag: bool, author: bool, favorited_by: bool, followed_by: bool
) -> list[ColumnElement[bool]]:
    """The WHERE clauses, each served by an index."""
    clauses: list[ColumnElement[bool]] = []
    if tag:
        clauses.append(Article.tag_list.contains(bindparam("tags", type_=ARRAY(Text))))  # GIN, `@>`
    if author:
        clauses.append(Article.author_id == _author_id())
    if favorited_by:
        favorites = select(Favorite.article_id).where(Favorite.user_id == _fan_id())
        clauses.append(Article.id.in_(favorites))
    if followed_by:
        clauses.append(
            Article.author_id.in_(select(Follow.followee_id).where(Follow.follower_id == _FOLLOWER))
        )
    return clauses


_FOLLOWER = bindparam("followed_by", type_=BigInteger)


def _count(*, tag: bool, author: bool, favorited_by: bool, followed_by: bool) -> ColumnElement[int]:
    """`articlesCount` from the counters (app/counts) when one filter (or none) applies.
    Two filters at once (tag and author, tag and favorited) have no counter of their own:
    they are counted, which costs at most the rows of the narrower filter (an author's
    articles, a user's favorites: the planner starts from the more selective index)."""
    chosen = [tag, author, favorited_by, followed_by]
    if not any(chosen):
        return counts.everything()
    if sum(chosen) > 1:
        clauses = _where(tag=tag, author=author, favorited_by=favorited_by, followed_by=followed_by)
        return select(func.count()).select_from(Article).where(*clauses).scalar_subquery()
    if tag:
        return counts.tagged(bindparam("tag", type_=Text))
    if author:
        return counts.written_by(_author_id())
    if favorited_by:
        return counts.favorited_by(_fan_id())
    return counts.followed_by(_FOLLOWER)


def favorites_count() -> ColumnElement[int]:
    """Exact favoritesCount: the article's base count plus its shards' deltas (see
    `FavoriteCountShard`); at most N index entries per article."""
    deltas = select(func.coalesce(func.sum(FavoriteCountShard.delta), 0)).where(
        FavoriteCountShard.article_id == Article.id
    )
    return Article.favorites_count + deltas.scalar_subquery()


def _article_json(*, viewer: bool, with_body: bool) -> ColumnElement[object]:
    """The `Article` (or, without body, the list item) object as the viewer sees it."""
    favorited: ColumnElement[bool] = false()
    following: ColumnElement[bool] = false()
    if viewer:
        favorited = exists().where(Favorite.user_id == _VIEWER, Favorite.article_id == Article.id)
        following = exists().where(
            Follow.follower_id == _VIEWER, Follow.followee_id == Article.author_id
        )
    fields = [
        json_sql.key("slug"), Article.slug,
        json_sql.key("title"), Article.title,
        json_sql.key("description"), Article.description,
        json_sql.key("tagList"), Article.tag_list,
        json_sql.key("createdAt"), json_sql.timestamp(Article.created_at),
        json_sql.key("updatedAt"), json_sql.timestamp(Article.updated_at),
        json_sql.key("favorited"), favorited,
        json_sql.key("favoritesCount"), favorites_count(),
        json_sql.key("author"), json_sql.profile(following),
    ]  # fmt: skip
    if with_body:
        fields += [json_sql.key("body"), Article.body]
    return func.json_build_object(*fields)
