from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Select, Text, bindparam, delete, exists, false, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles import service as articles
from app.cache import versions
from app.cache.store import Cache, changed
from app.cache.viewer import read_through
from app.comments.schemas import Comment, MultipleCommentsResponse
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
    article_id = await db.scalar(_ARTICLE_ID, {"slug": slug})
    if article_id is None:
        return None
    rows = await db.all(
        _comments_query(viewer=viewer_id is not None),
        {"article_id": article_id, "viewer_id": viewer_id},
    )
    comments = [
        Comment(
            id=id_,
            created_at=created_at,
            updated_at=updated_at,
            body=body,
            author=Profile(username=username, bio=bio, image=image, following=following),
        )
        for id_, created_at, updated_at, body, username, bio, image, following in rows
    ]
    return MultipleCommentsResponse(comments=comments).model_dump_json()


# Statements built once per shape: reads run on the driver, which compiles each once.
_ARTICLE_ID: Select[int] = select(Article.id).where(Article.slug == bindparam("slug", type_=Text))


@cache
def _comments_query(*, viewer: bool) -> Select[*tuple[Any, ...]]:
    """An article's comments with their authors, oldest first."""
    following = (
        exists().where(
            Follow.follower_id == bindparam("viewer_id", type_=BigInteger),
            Follow.followee_id == CommentRow.author_id,
        )
        if viewer
        else false()
    )
    return (
        select(
            CommentRow.id,
            CommentRow.created_at,
            CommentRow.updated_at,
            CommentRow.body,
            User.username,
            User.bio,
            User.image,
            following.label("following"),
        )
        .join(User, User.id == CommentRow.author_id)
        .where(CommentRow.article_id == bindparam("article_id", type_=BigInteger))
        .order_by(CommentRow.created_at, CommentRow.id)
    )


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
