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
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import json_sql
from app.cache import versions
from app.cache.store import Cache
from app.cache.viewer import read_through, viewer_changed
from app.db import Connect
from app.db_reads import ReadConnection
from app.errors import Forbidden, NotFound
from app.models import Follow, User
from app.retry import in_savepoint
from app.schemas import Profile
from app.users import service as users


async def get(connect: Connect, cache: Cache, *, username: str, viewer_id: int | None) -> str:
    """`{"profile": ...}` of `username`, with `following` as seen by the viewer, through the
    shared cache."""

    async def load(viewer: int | None) -> str | None:
        async with connect() as db:
            return await _profile_json(db, username=username, viewer_id=viewer)

    document = await read_through(
        cache,
        connect,
        family="profile",
        key=f"profile:{username}",
        versions=[versions.AUTHORS],
        viewer_id=viewer_id,
        load=load,
    )
    if document is None:
        raise NotFound(f"profile {username!r} not found")
    return document


async def _profile_json(db: ReadConnection, *, username: str, viewer_id: int | None) -> str | None:
    params = {"username": username, "viewer_id": viewer_id}
    document: str | None = await db.scalar(_profile_query(viewer=viewer_id is not None), params)
    return document


@cache
def _profile_query(*, viewer: bool) -> Select[str]:
    """`{"profile": ...}`, rendered by PostgreSQL (app/json_sql.py); built once per shape."""
    following = (
        exists().where(
            Follow.follower_id == bindparam("viewer_id", type_=BigInteger),
            Follow.followee_id == User.id,
        )
        if viewer
        else false()
    )
    document = func.json_build_object(json_sql.key("profile"), json_sql.profile(following))
    return select(cast(document, Text)).where(User.username == bindparam("username", type_=Text))


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
    viewer_changed(session, follower.id)
    return _profile(followee, following=True)


async def unfollow(session: AsyncSession, *, follower: User, username: str) -> Profile:
    """Stop following `username`; unfollowing someone not followed is a no-op."""
    followee = await users.get_by_username(session, username)
    statement = delete(Follow).where(
        Follow.follower_id == follower.id, Follow.followee_id == followee.id
    )
    await in_savepoint(session, lambda: session.execute(statement))
    viewer_changed(session, follower.id)
    return _profile(followee, following=False)


def _profile(user: User, *, following: bool) -> Profile:
    return Profile(username=user.username, bio=user.bio, image=user.image, following=following)
