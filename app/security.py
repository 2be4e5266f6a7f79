"""Passwords (argon2id, hashed off the event loop) and JWT access tokens."""

import secrets
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial

import anyio
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import Unauthorized

_ALGORITHM = "HS256"
MAX_USER_ID = 2**63  # exclusive: ids are PostgreSQL bigints
MAX_USER_ID_DIGITS = len(str(MAX_USER_ID))
MAX_TOKEN_VERSION = 2**31  # exclusive: `users.token_version` is an integer

# argon2id with OWASP's recommended minimum (Password Storage Cheat Sheet: 19 MiB, 2 passes,
# 1 lane). argon2-cffi's default, RFC 9106's low-memory profile (64 MiB, 3 passes, 4 lanes),
# costs several times more CPU per login: on a small machine a burst of logins would hold
# every core for tens of seconds (the burst scenario in docs/BENCHMARKS.md). Hashes record
# their own parameters, so older ones still verify, and a login upgrades them (`needs_rehash`).
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class PasswordHashing:
    """Runs argon2 in worker threads. argon2-cffi releases the GIL, and the limiter keeps
    a login burst from taking every thread (and 19 MiB of memory per hash) at once."""

    def __init__(self, threads: int, hasher: PasswordHasher = HASHER) -> None:
        self._limiter = anyio.CapacityLimiter(threads)
        self._hasher = hasher
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> bool:
        check = partial(self._verify, password_hash, password)
        return await anyio.to_thread.run_sync(check, limiter=self._limiter)

    async def dummy_hash(self) -> str:
        """A hash of nothing anyone types, to spend equal time on unknown accounts."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy

    def needs_rehash(self, password_hash: str) -> bool:
        """The hash was made with other parameters than today's (cheap: parses the header)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def make_token(user_id: int, *, secret: str, ttl_seconds: int, version: int = 0) -> str:
    """`version`: the user's token version (`User.token_version`), checked on writes."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "ver": version,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def read_user_id(token: str, *, secret: str) -> int:
    """The user id a token vouches for; forged, expired or malformed tokens are Unauthorized."""
    return read_token(token, secret=secret)[0]


def read_token(token: str, *, secret: str) -> tuple[int, int]:
    """(user id, token version) of a valid token. A token without a version (issued before
    versions existed) is version 0, every user's first."""
    user_id, version, expires = _verified(token, secret)
    if expires <= time.time():  # PyJWT's own rule, with no leeway
        raise Unauthorized("invalid or expired token")
    return user_id, version


# A token's signature and claims never change; only whether it has expired does, which
# read_token checks on every use. So each token is verified once per process, not on every
# request (its decoding was most of a logged-in cached read's CPU: bench/README.md). Only
# valid tokens are kept (an exception is not cached), so forged ones cannot fill it.
@lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> tuple[int, int, float]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        # PyJWT lets some malformed claims through as plain errors (`"exp": Infinity`).
        raise Unauthorized("invalid or expired token") from exc
    subject = claims["sub"]
    # Only what make_token writes: the digits of a bigint id, without leading zeros ("1_0",
    # " 1" or 2**70 would reach PostgreSQL and the logs as something no user is; "01" would
    # be a second spelling of user 1). Times as numbers, as make_token writes them: PyJWT
    # would also take "1_0" or other digits through int().
    if not (isinstance(subject, str) and subject.isascii() and subject.isdigit()):
        raise Unauthorized("invalid or expired token")
    if len(subject) > MAX_USER_ID_DIGITS or subject != str(int(subject)):
        raise Unauthorized("invalid or expired token")
    if not 0 < int(subject) < MAX_USER_ID:
        raise Unauthorized("invalid or expired token")
    for claim in ("exp", "iat", "nbf"):
        if claim in claims and type(claims[claim]) not in (int, float):
            raise Unauthorized("invalid or expired token")
    version = claims.get("ver", 0)
    # An int the users table can hold (bool is an int to Python, not to make_token).
    if type(version) is not int or not 0 <= version < MAX_TOKEN_VERSION:
        raise Unauthorized("invalid or expired token")
    return int(subject), version, claims["exp"]
