"""A page of a list: which slice (offset or cursor), and the document with its nextCursor."""

from datetime import datetime

import orjson

from app.articles import cursors, queries
from app.db_reads import ReadConnection
from app.errors import Invalid

# Deeper than this, `offset` is refused: skipping rows costs as many as are skipped, while a
# cursor's page costs the same at any depth.
MAX_OFFSET = 10_000


def window(
    filters: queries.Filters, *, limit: int, offset: int, cursor: str | None, key: bytes
) -> queries.Window:
    """The slice asked for; Invalid (422) for a deep offset, a foreign or changed cursor, or
    both an offset and a cursor."""
    if offset > MAX_OFFSET:
        raise Invalid(
            f"offset: at most {MAX_OFFSET}; to go deeper, pass the previous page's "
            "nextCursor as `cursor` (its cost does not grow with depth)"
        )
    if cursor is None:
        return queries.Window(limit=limit, offset=offset)
    if offset:
        raise Invalid("offset: not with a cursor (the cursor says where the page starts)")
    after = cursors.decode(cursor, key=key, query=filters.signature())
    return queries.Window(limit=limit, after=after)


async def load(
    db: ReadConnection,
    filters: queries.Filters,
    viewer_id: int | None,
    slice_: queries.Window,
    *,
    key: bytes,
) -> str:
    """`{"articles": [...], "articlesCount": n, "nextCursor": ...}` in one statement;
    nextCursor is null when this page is the last (it has fewer rows than the limit)."""
    statement, params = queries.page(filters, viewer_id, slice_)
    document, on_page, last = await db.one(statement, params)
    return finish(document, on_page, last, limit=slice_.limit, key=key, query=filters.signature())


def finish(
    document: str, on_page: int, last: str | None, *, limit: int, key: bytes, query: str
) -> str:
    """The page statement's row as the response: its document with nextCursor, signed from
    the last row's position when the page is full."""
    following = None
    if on_page == limit and last is not None:
        created_at, article_id, tier = orjson.loads(last)
        position = cursors.Position(datetime.fromisoformat(created_at), article_id, tier)
        following = cursors.encode(position, key=key, query=query)
    # The document is json_build_object's text, `{...}`: the cursor goes before its end.
    return f'{document[:-1]}, "nextCursor" : {orjson.dumps(following).decode()}}}'
