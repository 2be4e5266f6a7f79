"""Statement builders for the article read path.

Every read is ONE statement that returns the finished JSON document: PostgreSQL joins the
author, evaluates the viewer's `favorited`/`following` as indexed EXISTS, counts the matches
and renders the RealWorld shape with `json_build_object`. Python passes the text through:
no per-row objects, no re-serialisation, one round trip (see README, "Read path").
"""

from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    cast,
    exists,
    false,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import InstrumentedAttribute

from app.models import Article, Favorite, Follow, User

# The RealWorld suite wants milliseconds and a zone: 2026-01-02T03:04:05.678Z
_ISO_UTC: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")


def _key(name: str) -> ColumnElement[str]:
    # Keys inlined as SQL literals: json_build_object cannot type untyped bind parameters.
    return literal_column(f"'{name}'")


def _timestamp(column: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    return func.to_char(func.timezone(literal_column("'UTC'"), column), _ISO_UTC)


def _viewer_flags(viewer_id: int | None) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    if viewer_id is None:
        return false(), false()
    favorited = exists().where(Favorite.user_id == viewer_id, Favorite.article_id == Article.id)
    following = exists().where(
        Follow.follower_id == viewer_id, Follow.followee_id == Article.author_id
    )
    return favorited, following


def article_json(viewer_id: int | None, *, with_body: bool) -> ColumnElement[object]:
    """The `Article` (or, without body, the list item) object as the viewer sees it."""
    favorited, following = _viewer_flags(viewer_id)
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
        _key("favoritesCount"), Article.favorites_count,
        _key("author"), author,
    ]  # fmt: skip
    if with_body:
        fields += [_key("body"), Article.body]
    return func.json_build_object(*fields)


def single(slug: str, viewer_id: int | None) -> Select[str]:
    """`{"article": {...}}` for one slug, or no row."""
    document = func.json_build_object(_key("article"), article_json(viewer_id, with_body=True))
    return (
        select(cast(document, Text))
        .join_from(Article, User, User.id == Article.author_id)
        .where(Article.slug == slug)
    )


def page(
    clauses: list[ColumnElement[bool]], viewer_id: int | None, *, limit: int, offset: int
) -> Select[str]:
    """`{"articles": [...], "articlesCount": n}`, newest first."""
    newest_first = (Article.created_at.desc(), Article.id.desc())
    rows = (
        select(
            article_json(viewer_id, with_body=False).label("doc"), Article.created_at, Article.id
        )
        .join_from(Article, User, User.id == Article.author_id)
        .where(*clauses)
        .order_by(*newest_first)
        .limit(limit)
        .offset(offset)
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


def filters(
    *, tag: str | None, author: str | None, favorited_by: str | None
) -> list[ColumnElement[bool]]:
    """WHERE clauses of `GET /articles`, each served by an index."""
    clauses: list[ColumnElement[bool]] = []
    if tag is not None:
        clauses.append(Article.tag_list.contains([tag]))  # GIN index, `@>`
    if author is not None:
        writer = select(User.id).where(User.username == author).scalar_subquery()
        clauses.append(Article.author_id == writer)
    if favorited_by is not None:
        fan = select(User.id).where(User.username == favorited_by).scalar_subquery()
        clauses.append(Article.id.in_(select(Favorite.article_id).where(Favorite.user_id == fan)))
    return clauses


def feed_filter(viewer_id: int) -> ColumnElement[bool]:
    return Article.author_id.in_(select(Follow.followee_id).where(Follow.follower_id == viewer_id))
