"""Bulk imports, API side: the NDJSON upload is split into line-aligned chunks as it streams
in (never held whole), stored with the import in the request's transaction, and the import
job is enqueued after commit. The worker side is `loader.py`."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import queue
from app.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from app.imports.schemas import Import, LineError
from app.models import Import as ImportRow
from app.models import ImportChunk, ImportLineError

MAX_LINE_BYTES = 1 << 20
CHUNK_MAX_BYTES = 4 << 20
STATUS_ERRORS = 100


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
    import and whether it is new: with a `client_key` already used, the earlier one."""
    if client_key is not None and (earlier := await _by_key(session, user_id, client_key)):
        return await _status(session, earlier), False
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
            return await _status(session, earlier), False
        raise Conflict("an import with this Idempotency-Key is in progress")
    writer = _ChunkWriter(session, import_id, limits.batch_lines)
    async for number, line in _lines(body):
        await writer.add(number, line)
        if writer.total > limits.max_lines:
            raise PayloadTooLarge(f"an import holds at most {limits.max_lines} lines")
    await writer.close()
    if writer.total == 0:
        raise Invalid("import: no articles in the body (one JSON object per line)")
    await session.execute(
        update(ImportRow)
        .where(ImportRow.id == import_id)
        .values(
            total_lines=writer.total,
            chunk_count=writer.seq,
            processed_lines=len(writer.too_long),
            failed_count=len(writer.too_long),
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


async def _lines(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, line) as the body streams in; None for a line over MAX_LINE_BYTES,
    which is skipped without being buffered."""
    pending = bytearray()
    number = 0
    skipping = False
    async for data in body:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            number += 1
            if not skipping:
                pending += data[start:end]
            yield number, None if skipping or len(pending) > MAX_LINE_BYTES else bytes(pending)
            pending.clear()
            skipping = False
            start = end + 1
        if not skipping:
            pending += data[start:]
            if len(pending) > MAX_LINE_BYTES:
                skipping = True
                pending.clear()
    if pending or skipping:
        yield number + 1, None if skipping else bytes(pending)


@dataclass
class _ChunkWriter:
    """Groups consecutive lines into chunks of `batch_lines` articles (blank lines ride along
    uncounted) and inserts each chunk as soon as it is full."""

    session: AsyncSession
    import_id: int
    batch_lines: int
    seq: int = 0
    total: int = 0
    too_long: list[int] = field(default_factory=list)
    _lines: list[bytes] = field(default_factory=list)
    _first: int = 0
    _count: int = 0
    _size: int = 0

    async def add(self, number: int, line: bytes | None) -> None:
        if line is None:
            self.total += 1
            self.too_long.append(number)
            await self._flush()  # a chunk holds consecutive lines only
            return
        if not self._lines:
            self._first = number
        self._lines.append(line)
        self._size += len(line) + 1
        if line.strip():
            self.total += 1
            self._count += 1
        if self._count >= self.batch_lines or self._size >= CHUNK_MAX_BYTES:
            await self._flush()

    async def close(self) -> None:
        await self._flush()
        if self.too_long:
            await self.session.execute(
                insert(ImportLineError),
                [
                    {
                        "import_id": self.import_id,
                        "line": number,
                        "message": f"line longer than {MAX_LINE_BYTES} bytes",
                    }
                    for number in self.too_long
                ],
            )

    async def _flush(self) -> None:
        if self._count:
            await self.session.execute(
                insert(ImportChunk).values(
                    import_id=self.import_id,
                    seq=self.seq,
                    first_line=self._first,
                    data=b"\n".join(self._lines),
                )
            )
            self.seq += 1
        self._lines.clear()
        self._count = self._size = 0
