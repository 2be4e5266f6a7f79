from typing import Any

from sqlalchemy import or_, select
from sqlalchemy import update as update_rows
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import versions
from app.cache.store import changed
from app.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from app.models import User
from app.security import PasswordHashing


async def register(
    session: AsyncSession, hashing: PasswordHashing, *, username: str, email: str, password: str
) -> User:
    """Create a user; a taken username or email is a Conflict, decided by the unique indexes."""
    # Hash before the first query: the session is lazy, so no pooled connection waits on argon2.
    password_hash = await hashing.hash(password)
    await _ensure_free(session, username=username, email=email)
    # ON CONFLICT DO NOTHING: a registration racing past the check above still gets a 409,
    # without aborting the request's transaction.
    user: User | None = await session.scalar(
        insert(User)
        .values(username=username, email=email, password_hash=password_hash)
        .on_conflict_do_nothing()
        .returning(User)
    )
    if user is None:
        await _ensure_free(session, username=username, email=email)
        raise Conflict("username or email has already been taken")
    return user


async def login(
    sessions: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    hashing: PasswordHashing,
    *,
    email: str,
    password: str,
) -> User:
    """The user with these credentials; wrong email and wrong password look the same.

    It reads in its own short session instead of the request's: the connection goes back to
    the pool before argon2 runs (tens of ms), so a login burst cannot drain the pool. The
    request's `session` (lazy: no connection until used) only stores an upgraded hash.
    """
    async with sessions() as reader:
        user = await reader.scalar(select(User).where(User.email == email))
    # An unknown email costs a verification too, so timing does not reveal which emails exist.
    stored = user.password_hash if user is not None else await hashing.dummy_hash()
    if not await hashing.verify(stored, password) or user is None:
        raise Unauthorized("email or password is invalid")
    if hashing.needs_rehash(stored):
        await _upgrade_hash(session, hashing, user, password)
    return user


async def _upgrade_hash(
    session: AsyncSession, hashing: PasswordHashing, user: User, password: str
) -> None:
    """Store the password again with today's argon2 parameters (the password is only known
    at login). Only if the hash is still the one verified: a password changed meanwhile wins."""
    upgraded = await hashing.hash(password)
    await session.execute(
        update_rows(User)
        .where(User.id == user.id, User.password_hash == user.password_hash)
        .values(password_hash=upgraded)
    )
    user.password_hash = upgraded


async def get_by_id(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise Unauthorized("the token's user no longer exists")
    return user


async def get_by_username(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"profile {username!r} not found")
    return user


async def update(
    session: AsyncSession, hashing: PasswordHashing, *, user: User, changes: dict[str, Any]
) -> User:
    """Apply the given fields; at least one is required. A new email or password needs the
    current password (`current_password`); a new password revokes every token issued before
    (the caller answers with a new one)."""
    current_password = changes.pop("current_password", None)
    if not changes:
        raise Invalid("user: at least one field is required")
    for field in ("username", "email"):
        if changes.get(field) == getattr(user, field):
            del changes[field]
    if changes.keys() & {"email", "password"}:
        await _check_current_password(hashing, user, current_password)
    if "password" in changes:
        changes["password_hash"] = await hashing.hash(changes.pop("password"))
        changes["token_version"] = user.token_version + 1
    await _ensure_free(session, username=changes.get("username"), email=changes.get("email"))
    for field, value in changes.items():
        setattr(user, field, "" if field == "bio" and value is None else value)
    try:
        async with session.begin_nested():  # a racing rename fails only this savepoint
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("username or email has already been taken") from exc
    if changes.keys() & {"username", "bio", "image"}:
        changed(session, versions.AUTHORS)  # profiles are embedded in articles and comments
    return user


async def _check_current_password(
    hashing: PasswordHashing, user: User, current_password: str | None
) -> None:
    """Whoever holds a token (a stolen one too) must not take the account over with it."""
    if current_password is None:
        raise Invalid("user.currentPassword: required to change email or password")
    if not await hashing.verify(user.password_hash, current_password):
        raise Forbidden("user.currentPassword: the current password is wrong")


async def _ensure_free(session: AsyncSession, *, username: str | None, email: str | None) -> None:
    clauses = []
    if username is not None:
        clauses.append(User.username == username)
    if email is not None:
        clauses.append(User.email == email)
    if not clauses:
        return
    taken = (await session.execute(select(User.username, User.email).where(or_(*clauses)))).all()
    for row in taken:
        if row.username == username:
            raise Conflict("username has already been taken")
        raise Conflict("email has already been taken")
