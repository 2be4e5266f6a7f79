"""Statement builders for the article read path.

Every read is ONE statement that returns the finished JSON document: PostgreSQL joins the
author, evaluates the viewer's `favorited`/`following` as indexed EXISTS, counts the matches
and renders the RealWorld shape with `json_build_object`. Python passes the text through:
no per-row objects, no re-serialisation, one round trip (docs/ARCHITECTURE.md, "Read path").
"""

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import InstrumentedAttribute

from app.models import Article, Favorite, FavoriteCountShard, Follow, User

# The RealWorld suite wants milliseconds and a zone: 2026-01-02T03:04:05.678Z
_ISO_UTC: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")


def _key(name: str) -> ColumnElement[str]:
    # Keys inlined as SQL literals: json_build_object cannot type untyped bind parameters.
    return literal_column(f"'{name}'")


def _timestamp(column: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    return func.to_char(func.timezone(literal_column("'UTC'"), column), _ISO_UTC)


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


def page(
    filters: Filters, viewer_id: int | None, *, limit: int, offset: int
) -> tuple[Select[str], dict[str, object]]:
    """`{"articles": [...], "articlesCount": n}`, newest first, with its parameters."""
    statement = _page(
        tag=filters.tag is not None,
        author=filters.author is not None,
        favorited_by=filters.favorited_by is not None,
        followed_by=filters.followed_by is not None,
        viewer=viewer_id is not None,
    )
    params: dict[str, object] = {
        "tags": [filters.tag],
        "author": filters.author,
        "favorited_by": filters.favorited_by,
        "followed_by": filters.followed_by,
        "viewer_id": viewer_id,
        "limit": limit,
        "offset": offset,
    }
    return statement, params


def single(slug: str, viewer_id: int | None) -> tuple[Select[str], dict[str, object]]:
    """`{"article": {...}}` for one slug (no row if unknown), with its parameters."""
    return _single(viewer=viewer_id is not None), {"slug": slug, "viewer_id": viewer_id}


@cache
def _single(*, viewer: bool) -> Select[str]:
    document = func.json_build_object(_key("article"), _article_json(viewer=viewer, with_body=True))
    return (
        select(cast(document, Text))
        .join_from(Article, User, User.id == Article.author_id)
        .where(Article.slug == bindparam("slug", type_=Text))
    )


@cache
def _page(
    *, tag: bool, author: bool, favorited_by: bool, followed_by: bool, viewer: bool
) -> Select[str]:
    clauses = _where(tag=tag, author=author, favorited_by=favorited_by, followed_by=followed_by)
    rows = (
        select(
            _article_json(viewer=viewer, with_body=False).label("doc"),
            Article.created_at,
            Article.id,
        )
        .join_from(Article, User, User.id == Article.author_id)
        .where(*clauses)
        .order_by(Article.created_at.desc(), Article.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .subquery()
    )
    in_order = aggregate_order_by(rows.c.doc, rows.c.created_at.desc(), rows.c.id.desc())
    articles = select(func.coalesce(func.json_agg(in_order), literal_column("'[]'::json")))
    total = select(func.count()).select_from(Article).where(*clauses)
    document = func.json_build_object(
        _key("articles"), articles.scalar_subquery(),
        _key("articlesCount"), total.scalar_subquery(),
    )  # fmt: skip
    return select(cast(document, Text))


def _where(
    *, tag: bool, author: bool, favorited_by: bool, followed_by: bool
) -> list[ColumnElement[bool]]:
    """The WHERE clauses, each served by an index."""
    clauses: list[ColumnElement[bool]] = []
    if tag:
        clauses.append(Article.tag_list.contains(bindparam("tags", type_=ARRAY(Text))))  # GIN, `@>`
    if author:
        writer = select(User.id).where(User.username == bindparam("author", type_=Text))
        clauses.append(Article.author_id == writer.scalar_subquery())
    if favorited_by:
        fan = select(User.id).where(User.username == bindparam("favorited_by", type_=Text))
        favorites = select(Favorite.article_id).where(Favorite.user_id == fan.scalar_subquery())
        clauses.append(Article.id.in_(favorites))
    if followed_by:
        follower = bindparam("followed_by", type_=BigInteger)
        clauses.append(
            Article.author_id.in_(select(Follow.followee_id).where(Follow.follower_id == follower))
        )
    return clauses


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
    author = func.json_build_object(
        _key("username"), User.username,
        _key("bio"), User.bio,
        _key("image"), User.image,
        _key("following"), following,
    )  # fmt: skip
    fields = [
        _key("slug"), Article.slug,
        _key("title"), Article.title,
        _key("description"), Article.description,
        _key("tagList"), Article.tag_list,
        _key("createdAt"), _timestamp(Article.created_at),
        _key("updatedAt"), _timestamp(Article.updated_at),
        _key("favorited"), favorited,
        _key("favoritesCount"), favorites_count(),
        _key("author"), author,
    ]  # fmt: skip
    if with_body:
        fields += [_key("body"), Article.body]
    return func.json_build_object(*fields)
