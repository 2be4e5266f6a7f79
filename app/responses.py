"""Responses of JSON documents that are already text, and HTTP caching for public reads."""

import time
from urllib.parse import quote

import xxhash
from starlette.datastructures import URL
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

# Anonymous answers are the same for everyone: shared caches (nginx, a CDN) may keep them a
# second and serve them a little longer while one request refreshes. Logged-in answers carry
# the reader's own flags: private, and revalidated on every use.
PUBLIC = "public, max-age=1, stale-while-revalidate=5"
PRIVATE = "private, no-cache"


class RawJSON(Response):
    """A JSON document that is already text (built by PostgreSQL): sent as is.

    Routes returning it declare `response_model=` so the OpenAPI document still shows the
    schema; tests validate these bodies against the same models."""

    media_type = "application/json"


class Prebuilt(Response):
    """A response whose headers the caller gives as the server sends them (lowercase names,
    bytes): Starlette's `init_headers` (a dict walked, names lowered, values encoded) skipped
    on the hottest answers."""

    def __init__(self, status_code: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]):
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = raw_headers


_PUBLIC = PUBLIC.encode()
_PRIVATE = PRIVATE.encode()
_JSON = (b"content-type", b"application/json")
_VARY = (b"vary", b"Authorization")


def public_read(document: str, *, if_none_match: str | None, personal: bool) -> Response:
    """A public GET's answer with a strong ETag (a hash of the exact body: equal bodies, equal
    tags, whichever worker or cache tier built them); 304 without a body when the client
    already has it. The hash is XXH3's 128 bits: a tag is no secret and only has to tell one
    URL's versions apart, and a cryptographic hash cost microseconds per kilobyte on every
    public read (docs/BENCHMARKS.md, "The edge outermost")."""
    body = document.encode()
    etag = b'"%s"' % xxhash.xxh3_128_hexdigest(body).encode()
    headers = [(b"etag", etag), (b"cache-control", _PRIVATE if personal else _PUBLIC), _VARY]
    if not personal:
        headers.append((b"x-accel-expires", _micro_cache_expiry()))
    if if_none_match is not None and _matches(if_none_match, etag.decode()):
        return Prebuilt(304, b"", headers)
    headers += [(b"content-length", b"%d" % len(body)), _JSON]
    return Prebuilt(200, body, headers)


def _micro_cache_expiry() -> bytes:
    """How long nginx's micro-cache keeps this answer: to the end of the current second.

    nginx counts validity in whole seconds and keeps a copy while its clock's second is at most
    the one given, so `max-age=1` alone meant a copy could be served until nearly two seconds
    after it was built; `@<this second>` keeps it under one. nginx takes this header over
    Cache-Control and never passes it on to the client (docs/ARCHITECTURE.md "Cache")."""
    return b"@%d" % int(time.time())


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110 13.1.2): `W/` is ignored."""
    return any(
        tag == "*" or tag.removeprefix("W/") == etag
        for tag in (part.strip() for part in if_none_match.split(","))
    )


def moved(scope: Scope, slug: str, *, tail: str = "") -> Response:
    """301 to the same path and query with the article's current `slug` in place of the old
    one, which is the path's last segment before `tail` (`/comments`)."""
    url = URL(scope=scope)
    before = url.path.removesuffix(tail).rsplit("/", 1)[0]
    path = f"{before}/{quote(slug, safe='')}{tail}"
    return RedirectResponse(f"{path}?{url.query}" if url.query else path, status_code=301)
