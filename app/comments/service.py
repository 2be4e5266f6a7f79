from functools import cache

from sqlalchemy import (
    BigInteger,
    Select,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from app import json_sql
from app.articles import service as articles
from app.cache import versions
from app.cache.store import Cache, changed
from app.cache.viewer import read_through
from app.comments.schemas import Comment
from app.db import Connect
from app.db_reads import ReadConnection
from app.errors import Forbidden, NotFound
from app.events import service as events
from app.models import Article, Follow, User
from app.models import Comment as CommentRow
from app.schemas import Profile


async def list_comments(
    connect: Connect, cache: Cache, *, slug: str, viewer_id: int | None
) -> str | articles.Moved:
    """`{"comments": [...]}` of an article, oldest first, through the shared cache; or where
    the article went, for a slug it had before its title changed."""

    async def load(viewer: int | None) -> str | None:
        async with connect() as db:
            return await _comments_json(db, slug=slug, viewer_id=viewer)

    document = await read_through(
        cache,
        connect,
        family="comments",
        key=f"comments:{slug}",
        versions=[versions.comments(slug), versions.AUTHORS],
        viewer_id=viewer_id,
        load=load,
    )
    if document is None:
        return await articles.moved(connect, slug)
    return document


async def _comments_json(db: ReadConnection, *, slug: str, viewer_id: int | None) -> str | None:
    # One statement: no row when the slug is unknown, else the finished document.
    statement = _comments_query(viewer=viewer_id is not None)
    document: str | None = await db.scalar(statement, {"slug": slug, "viewer_id": viewer_id})
    return document


@cache
def _comments_query(*, viewer: bool) -> Select[str]:
    """`{"comments": [...]}` of the article with the slug, oldest first, rendered by
    PostgreSQL (app/json_sql.py); built once per shape."""
    following = (
        exists().where(
            Follow.follower_id == bindparam("viewer_id", type_=BigInteger),
            Follow.followee_id == CommentRow.author_id,
        )
        if viewer
        else false()
    )
    comment = func.json_build_object(
        json_sql.key("id"), CommentRow.id,
        json_sql.key("createdAt"), json_sql.timestamp(CommentRow.created_at),
        json_sql.key("updatedAt"), json_sql.timestamp(CommentRow.updated_at),
        json_sql.key("body"), CommentRow.body,
        json_sql.key("author"), json_sql.profile(following),
    )  # fmt: skip
    in_order = aggregate_order_by(comment, CommentRow.created_at, CommentRow.id)
    comments = func.coalesce(func.json_agg(in_order), literal_column("'[]'::json"))
    document = (
        select(cast(func.json_build_object(json_sql.key("comments"), comments), Text))
        .join_from(CommentRow, User, User.id == CommentRow.author_id)
        .where(CommentRow.article_id == Article.id)
        .scalar_subquery()
    )
    return select(document).where(Article.slug == bindparam("slug", type_=Text))


async def add(session: AsyncSession, *, slug: str, author: User, body: str) -> Comment:
    """Comment on an article as `author`."""
    article = await articles.get_row(session, slug)
    row = {"article_id": article.id, "author_id": author.id, "body": body}
    with articles.deleted_meanwhile(slug):
        comment = (
            await session.scalars(insert(CommentRow).values(row).returning(CommentRow))
        ).one()
    # Under the slug the article has now: `slug` may be an old one.
    changed(session, versions.comments(article.slug))
    created = _comment(comment, author, following=False)
    about = {"slug": article.slug, "title": article.title}
    data = {"article": about, "comment": created.model_dump(mode="json")}
    await events.record(session, events.COMMENT_CREATED, owner_id=article.author_id, data=data)
    return created


async def remove(session: AsyncSession, *, slug: str, comment_id: int, user: User) -> None:
    """Delete one's own comment on the article `slug`."""
    article = await articles.get_row(session, slug)
    comment = await session.get(CommentRow, comment_id)
    if comment is None or comment.article_id != article.id:
        raise NotFound(f"comment {comment_id} not found on article {slug!r}")
    if comment.author_id != user.id:
        raise Forbidden("only the author may delete this comment")
    await session.execute(delete(CommentRow).where(CommentRow.id == comment.id))
    changed(session, versions.comments(article.slug))


def _comment(comment: CommentRow, author: User, *, following: bool) -> Comment:
    profile = Profile(
        username=author.username, bio=author.bio, image=author.image, following=following
    )
    return Comment(
        id=comment.id,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        body=comment.body,
        author=profile,
    )
