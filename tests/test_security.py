"""The token boundary as a unit: only what make_token writes passes (the fuzz through a real
server: tests/test_token_boundary.py)."""

import time

import jwt
import pytest

from app.errors import Unauthorized
from app.security import make_token, read_user_id

SECRET = "unit-secret-" + "k" * 32
LATER = 10**10


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "01", "exp": LATER},  # a second spelling of user 1
        {"sub": str(2**63), "exp": LATER},
        {"sub": "0", "exp": LATER},
        {"sub": "1_0", "exp": LATER},
        {"sub": " 1", "exp": LATER},
        {"sub": "\u0661", "exp": LATER},  # Arabic-Indic one
        {"sub": 1, "exp": LATER},
        {"sub": "1", "exp": "9999999999"},
        {"sub": "1", "exp": True},
        {"sub": "1", "exp": LATER, "iat": "1_0"},
        {"sub": "1", "exp": LATER, "nbf": [1]},
        {"sub": "1", "exp": LATER, "ver": -1},
        {"sub": "1", "exp": LATER, "ver": True},
        {"sub": "1"},
    ],
)
def test_anything_but_what_make_token_writes_is_unauthorized(claims):
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized):
        read_user_id(token, secret=SECRET)


def test_make_tokens_own_tokens_pass():
    assert read_user_id(make_token(2**63 - 1, secret=SECRET, ttl_seconds=60), secret=SECRET) == (
        2**63 - 1
    )


def test_a_token_verified_once_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens are verified once per process (a cache), but whether one has expired is
    checked on every use."""
    token = make_token(7, secret=SECRET, ttl_seconds=60)
    assert read_user_id(token, secret=SECRET) == 7  # verified, and remembered
    assert read_user_id(token, secret=SECRET) == 7
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)  # the clock app.security reads
    with pytest.raises(Unauthorized):
        read_user_id(token, secret=SECRET)


def test_a_remembered_token_is_remembered_for_its_secret_only() -> None:
    token = make_token(7, secret=SECRET, ttl_seconds=60)
    assert read_user_id(token, secret=SECRET) == 7
    with pytest.raises(Unauthorized):
        read_user_id(token, secret=SECRET + "-other")
