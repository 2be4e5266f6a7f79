from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden
from app.models import Follow, User
from app.retry import in_savepoint
from app.schemas import Profile
from app.users import service as users


async def get(session: AsyncSession, *, username: str, viewer_id: int | None) -> Profile:
    """The profile of `username`, with `following` as seen by the viewer."""
    user = await users.get_by_username(session, username)
    following = viewer_id is not None and bool(
        await session.scalar(
            select(exists().where(Follow.follower_id == viewer_id, Follow.followee_id == user.id))
        )
    )
    return _profile(user, following=following)


async def follow(session: AsyncSession, *, follower: User, username: str) -> Profile:
    """Follow `username`; following twice is the same as once."""
    followee = await users.get_by_username(session, username)
    if followee.id == follower.id:
        raise Forbidden("you cannot follow yourself")
    statement = (
        insert(Follow)
        .values(follower_id=follower.id, followee_id=followee.id)
        .on_conflict_do_nothing()
    )
    await in_savepoint(session, lambda: session.execute(statement))
    return _profile(followee, following=True)


async def unfollow(session: AsyncSession, *, follower: User, username: str) -> Profile:
    """Stop following `username`; unfollowing someone not followed is a no-op."""
    followee = await users.get_by_username(session, username)
    statement = delete(Follow).where(
        Follow.follower_id == follower.id, Follow.followee_id == followee.id
    )
    await in_savepoint(session, lambda: session.execute(statement))
    return _profile(followee, following=False)


def _profile(user: User, *, following: bool) -> Profile:
    return Profile(username=user.username, bio=user.bio, image=user.image, following=following)
