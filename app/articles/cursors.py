"""Cursors for keyset pagination: where the last page ended, opaque and tamper-evident.

A cursor is the last article's position in the list's order, `(created_at, id)` (and, in
a search, its tier: title matches come first), packed in 18 bytes and signed with
HMAC-SHA256 (16 bytes kept) under a key derived from JWT_SECRET, over the position *and*
the query it belongs to: a cursor edited by hand, or taken from another list, is refused
(422). The next page is then `WHERE (created_at, id) < position`, served by the same index
as the first page: its cost does not depend on its depth (docs/DATA.md).
"""

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from app.errors import Invalid

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_VERSION = 1
_LAYOUT = struct.Struct(">BBqq")  # version, tier, created_at in µs since the epoch, id
_MAC_BYTES = 16


@dataclass(frozen=True, slots=True)
class Position:
    """An article's place in a list: newest first, ties by id (search: by tier first)."""

    created_at: datetime
    id: int
    tier: int = 0


@lru_cache(maxsize=4)
def signing_key(secret: str) -> bytes:
    """A key of its own for cursors, derived from the JWT secret: a cursor can never pass
    for a token, nor a token for a cursor."""
    return hmac.new(secret.encode(), b"conduit list cursor v1", hashlib.sha256).digest()


def encode(position: Position, *, key: bytes, query: str) -> str:
    micros = (position.created_at - _EPOCH) // _MICROSECOND
    payload = _LAYOUT.pack(_VERSION, position.tier, micros, position.id)
    token = payload + _mac(key, payload, query)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def decode(cursor: str, *, key: bytes, query: str) -> Position:
    """The position a cursor of this query names; Invalid (422) for anything else."""
    try:
        token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        token = b""
    payload, mac = token[: _LAYOUT.size], token[_LAYOUT.size :]
    if len(token) != _LAYOUT.size + _MAC_BYTES or not hmac.compare_digest(
        mac, _mac(key, payload, query)
    ):
        raise Invalid(
            "cursor: not a cursor of this list (changed, or from another query); "
            "use the nextCursor of the previous page, or start without one"
        )
    _, tier, micros, article_id = _LAYOUT.unpack(payload)
    return Position(created_at=_EPOCH + micros * _MICROSECOND, id=article_id, tier=tier)


def _mac(key: bytes, payload: bytes, query: str) -> bytes:
    signed = payload + b"\x00" + query.encode()
    return hmac.new(key, signed, hashlib.sha256).digest()[:_MAC_BYTES]
