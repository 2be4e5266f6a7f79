"""Bulk imports, API side: the NDJSON upload is split into line-aligned chunks as it streams
in (never held whole, `chunks.py`), stored with the import in the request's transaction, and
the import job is enqueued after commit. The worker side is `loader.py`."""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import queue
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge, TooManyRequests
from app.imports.chunks import ChunkWriter, numbered_lines
from app.imports.schemas import Import, LineError
from app.models import Import as ImportRow
from app.models import ImportLineError

STATUS_ERRORS = 100
# Held by the upload's transaction, so it works through PgBouncer in transaction mode.
_UPLOAD_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))")
UPLOAD_RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class Limits:
    max_lines: int
    batch_lines: int


async def create(
    session: AsyncSession,
    *,
    user_id: int,
    body: AsyncIterator[bytes],
    limits: Limits,
    client_key: str | None,
) -> tuple[Import, bool]:
    """Store an upload as an import of `user_id` and enqueue it after commit. Returns the
    import and whether it is new.

    With a `client_key` already used, the earlier import, if this body is the same one
    (hashed as it streams, nothing stored); another body is Invalid, as the idempotency
    middleware answers other keyed writes. One upload per user at a time, whichever process
    takes it (TooManyRequests): each holds a pooled connection for as long as it streams.
    """
    digest = hashlib.sha256()  # the body's: the method and path of an import are fixed
    body = _hashed(body, digest)
    if client_key is not None and (earlier := await _by_key(session, user_id, client_key)):
        return await _replayed(session, earlier, body, digest), False
    if not await session.scalar(_UPLOAD_LOCK, {"name": f"import-upload:{user_id}"}):
        raise TooManyRequests(
            "an import of yours is still uploading: send the next one when it is done",
            retry_after_s=UPLOAD_RETRY_AFTER_S,
        )
    import_id = await session.scalar(
        insert(ImportRow)
        .values(user_id=user_id, client_key=client_key)
        .on_conflict_do_nothing(
            index_elements=[ImportRow.user_id, ImportRow.client_key],
            index_where=ImportRow.client_key.is_not(None),
        )
        .returning(ImportRow.id)
    )
    if import_id is None:  # the same key, committed by a concurrent request meanwhile
        if client_key is not None and (earlier := await _by_key(session, user_id, client_key)):
            return await _replayed(session, earlier, body, digest), False
        raise Conflict("an import with this Idempotency-Key is in progress")
    writer = ChunkWriter(session, import_id, limits.batch_lines)
    async for number, line in numbered_lines(body):
        await writer.add(number, line)
        if writer.lines > limits.max_lines:
            raise PayloadTooLarge(
                f"an import holds at most {limits.max_lines} lines, blank lines included"
            )
    await writer.close()
    if writer.articles == 0:
        raise Invalid("import: no articles in the body (one JSON object per line)")
    await session.execute(
        update(ImportRow)
        .where(ImportRow.id == import_id)
        .values(
            total_lines=writer.articles,
            chunk_count=writer.seq,
            processed_lines=len(writer.too_long),
            failed_count=len(writer.too_long),
            request_hash=digest.hexdigest(),
        )
    )
    queue.defer(session, queue.RUN_IMPORT, key=job_key(import_id), import_id=import_id)
    row = await session.get_one(ImportRow, import_id, populate_existing=True)
    return await _status(session, row), True


async def get(session: AsyncSession, *, import_id: int, user_id: int) -> Import:
    """State, progress, counts and the first line errors of one's own import."""
    row = await session.scalar(
        select(ImportRow).where(ImportRow.id == import_id, ImportRow.user_id == user_id)
    )
    if row is None:
        raise NotFound(f"import {import_id} not found")
    return await _status(session, row)


async def line_errors(
    session: AsyncSession, *, import_id: int, user_id: int, limit: int, offset: int
) -> tuple[list[LineError], int]:
    """Every line of one's own import that was not imported, by line number."""
    count = await session.scalar(
        select(ImportRow.failed_count).where(
            ImportRow.id == import_id, ImportRow.user_id == user_id
        )
    )
    if count is None:
        raise NotFound(f"import {import_id} not found")
    return await _errors(session, import_id, limit=limit, offset=offset), count


def job_key(import_id: int) -> str:
    return f"import:{import_id}"


async def _by_key(session: AsyncSession, user_id: int, client_key: str) -> ImportRow | None:
    return await session.scalar(
        select(ImportRow).where(ImportRow.user_id == user_id, ImportRow.client_key == client_key)
    )


async def _hashed(body: AsyncIterator[bytes], digest: "hashlib._Hash") -> AsyncIterator[bytes]:
    async for data in body:
        digest.update(data)
        yield data


async def _replayed(
    session: AsyncSession,
    earlier: ImportRow,
    body: AsyncIterator[bytes],
    digest: "hashlib._Hash",
) -> Import:
    """The earlier import, once this request's body has been read (and hashed) to the end
    and found the same. Imports stored before bodies were hashed have no hash to compare."""
    async for _ in body:
        pass
    if earlier.request_hash is not None and earlier.request_hash != digest.hexdigest():
        raise Invalid("Idempotency-Key was already used for a different request")
    return await _status(session, earlier)


async def _status(session: AsyncSession, row: ImportRow) -> Import:
    return Import(
        id=row.id,
        state=row.state,
        total_lines=row.total_lines,
        processed_lines=row.processed_lines,
        imported_count=row.imported_count,
        failed_count=row.failed_count,
        progress=round(row.processed_lines / row.total_lines, 4) if row.total_lines else 0.0,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        errors=await _errors(session, row.id, limit=STATUS_ERRORS, offset=0),
    )


async def _errors(
    session: AsyncSession, import_id: int, *, limit: int, offset: int
) -> list[LineError]:
    rows = await session.execute(
        select(ImportLineError.line, ImportLineError.message)
        .where(ImportLineError.import_id == import_id)
        .order_by(ImportLineError.line)
        .limit(limit)
        .offset(offset)
    )
    return [LineError(line=line, message=message) for line, message in rows]
