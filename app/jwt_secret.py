"""The JWT signing secret: never one this repository ever published (docs/SECURITY.md).

Whoever knows the secret can sign a token for any user, so a value that appeared in a
default, a compose file or a manifest is as good as public. `make run` and development mode
(`APP_ENV=development`) generate a random one and keep it in a file; everything else must
be given `JWT_SECRET`, and the API refuses to start without it.
"""

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

MIN_LENGTH = 32
# SHA-256 of every value this repository has published as a JWT secret (hashes, so the
# refused values are not handed out afresh here). Add any new one; tests/test_jwt_secret.py
# scans the repository for `JWT_SECRET` values and fails on one missing from this list.
PUBLISHED_SHA256 = frozenset(
    {
        # app/config.py's old development default
        "8e911ff719526561388f349cbf858163d5df00b50256e53862aac080967c83da",
        # docker-compose.yml's old fallback
        "a53be2b865b3dd6f74afea0cc38683e5d0dfdcddaaf9a0e0975c1f76496031f9",
        # deploy/k8s/secret.yaml's placeholder
        "d0dd6d3a11134874e10c4b404e6a09f2462ebf993563ffe4c3c9e7c28e3f6d4a",
    }
)
# Placeholders people write and forget to replace, in any case.
_PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "placeholder")


class MissingSecret(RuntimeError):
    """The API was started without JWT_SECRET outside development mode."""


def problem(secret: str) -> str | None:
    """Why `secret` must not sign tokens, or None if it may."""
    if hashlib.sha256(secret.encode()).hexdigest() in PUBLISHED_SHA256:
        return "is a value published in the Conduit repository; generate your own"
    if any(mark in secret.lower() for mark in _PLACEHOLDER_MARKS):
        return "is a placeholder; replace it with a random secret"
    if len(secret) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    return None


def require(secret: str) -> None:
    """MissingSecret unless a secret is configured (its quality is checked by Settings)."""
    if not secret:
        raise MissingSecret(
            "JWT_SECRET is not set: the API refuses to start without a secret of its own. "
            f"Set JWT_SECRET to at least {MIN_LENGTH} random characters "
            '(python -c "import secrets; print(secrets.token_urlsafe(48))"), use `make run`, '
            "or set APP_ENV=development for a generated development secret (docs/SECURITY.md)."
        )


def data_dir() -> Path:
    """Where `make run` and development mode keep their state (DATA_DIR, default ./.data)."""
    return Path(os.environ.get("DATA_DIR") or ".data").resolve()


def load_or_create(path: Path) -> str:
    """The secret kept in `path` (mode 0600), generated on first use. Concurrent first uses
    (several workers starting at once) agree: the file appears complete or not at all."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        # Fails if another process got there first: then theirs is the secret.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    secret = path.read_text().strip()
    if reason := problem(secret):
        raise ValueError(f"{path}: the secret kept there {reason}; delete the file to renew it")
    return secret
