"""Statement builders for the article read path. Each page is one SELECT: author,
`favorited` and `following` come from a join and two indexed EXISTS, never a query per row."""

from typing import Any

from sqlalchemy import ColumnElement, Select, exists, false, func, select

from app.models import Article, Favorite, Follow, User

Rows = Select[*tuple[Any, ...]]


def _viewer_flags(viewer_id: int | None) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    if viewer_id is None:
        return false().label("favorited"), false().label("following")
    favorited = exists().where(Favorite.user_id == viewer_id, Favorite.article_id == Article.id)
    following = exists().where(
        Follow.follower_id == viewer_id, Follow.followee_id == Article.author_id
    )
    return favorited.label("favorited"), following.label("following")


def article_rows(viewer_id: int | None, *, with_body: bool) -> Rows:
    """Article, author profile and the viewer's flags; filter and order it further."""
    columns = [
        Article.slug,
        Article.title,
        Article.description,
        Article.tag_list,
        Article.created_at,
        Article.updated_at,
        Article.favorites_count,
        User.username,
        User.bio,
        User.image,
        *_viewer_flags(viewer_id),
    ]
    if with_body:
        columns.append(Article.body)
    return select(*columns).join(User, User.id == Article.author_id)


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


def page(statement: Rows, *, limit: int, offset: int) -> Rows:
    return (
        statement.order_by(Article.created_at.desc(), Article.id.desc()).limit(limit).offset(offset)
    )


def count(clauses: list[ColumnElement[bool]]) -> Select[int]:
    return select(func.count()).select_from(Article).where(*clauses)
