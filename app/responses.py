"""Responses of JSON documents that are already text, and HTTP caching for public reads."""

import hashlib
import time
from urllib.parse import quote

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


def public_read(document: str, *, if_none_match: str | None, personal: bool) -> Response:
    """A public GET's answer with a strong ETag (a hash of the exact body: equal bodies, equal
    tags, whichever worker or cache tier built them); 304 without a body when the client
    already has it."""
    body = document.encode()
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {
        "ETag": etag,
        "Cache-Control": PRIVATE if personal else PUBLIC,
        "Vary": "Authorization",
    }
    if not personal:
        headers["X-Accel-Expires"] = _micro_cache_expiry()
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return RawJSON(body, headers=headers)


def _micro_cache_expiry() -> str:
    """How long nginx's micro-cache keeps this answer: to the end of the current second.

    nginx counts validity in whole seconds and keeps a copy while its clock's second is at most
    the one given, so `max-age=1` alone meant a copy could be served until nearly two seconds
    after it was built; `@<this second>` keeps it under one. nginx takes this header over
    Cache-Control and never passes it on to the client (docs/ARCHITECTURE.md "Cache")."""
    return f"@{int(time.time())}"


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
