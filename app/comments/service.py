from sqlalchemy import delete, exists, false, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles import service as articles
from app.comments.schemas import Comment
from app.errors import Forbidden, NotFound
from app.models import Comment as CommentRow
from app.models import Follow, User
from app.schemas import Profile


async def list_comments(
    session: AsyncSession, *, slug: str, viewer_id: int | None
) -> list[Comment]:
    """An article's comments, oldest first, in one statement."""
    article = await articles.get_row(session, slug)
    following = (
        exists().where(Follow.follower_id == viewer_id, Follow.followee_id == CommentRow.author_id)
        if viewer_id is not None
        else false()
    )
    statement = (
        select(CommentRow, User, following.label("following"))
        .join(User, User.id == CommentRow.author_id)
        .where(CommentRow.article_id == article.id)
        .order_by(CommentRow.created_at, CommentRow.id)
    )
    rows = (await session.execute(statement)).all()
    return [_comment(comment, author, following=flag) for comment, author, flag in rows]


async def add(session: AsyncSession, *, slug: str, author: User, body: str) -> Comment:
    """Comment on an article as `author`."""
    article = await articles.get_row(session, slug)
    comment = CommentRow(article_id=article.id, author_id=author.id, body=body)
    session.add(comment)
    await session.flush()
    await session.refresh(comment)  # server-side timestamps
    return _comment(comment, author, following=False)


async def remove(session: AsyncSession, *, slug: str, comment_id: int, user: User) -> None:
    """Delete one's own comment on the article `slug`."""
    article = await articles.get_row(session, slug)
    comment = await session.get(CommentRow, comment_id)
    if comment is None or comment.article_id != article.id:
        raise NotFound(f"comment {comment_id} not found on article {slug!r}")
    if comment.author_id != user.id:
        raise Forbidden("only the author may delete this comment")
    await session.execute(delete(CommentRow).where(CommentRow.id == comment.id))


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
