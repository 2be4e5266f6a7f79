"""An NDJSON upload cut into line-aligned chunks as it streams in, never held whole.

No line costs more memory than its own bytes: the open chunk is one buffer, not a list of
lines, and a blank (whitespace-only) line is dropped as it arrives. Blank lines still count
against the import's line limit (`ChunkWriter.lines`), and inside a chunk each one leaves a
bare newline, so that the worker numbers the lines after it right.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ImportChunk, ImportLineError

MAX_LINE_BYTES = 1 << 20
CHUNK_MAX_BYTES = 4 << 20
BLANK = b""


async def numbered_lines(body: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, line) as the body streams in: BLANK for a whitespace-only line, None
    for a line over MAX_LINE_BYTES, which is skipped without being buffered."""
    pending = bytearray()
    number = 0
    skipping = False
    async for data in body:
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            number += 1
            if not skipping:
                pending += data[start:end]
            yield number, None if skipping or len(pending) > MAX_LINE_BYTES else _line(pending)
            pending.clear()
            skipping = False
            start = end + 1
        if not skipping:
            pending += data[start:]
            if len(pending) > MAX_LINE_BYTES:
                skipping = True
                pending.clear()
    if pending or skipping:
        yield number + 1, None if skipping else _line(pending)


def _line(pending: bytearray) -> bytes:
    # isspace() copies nothing: a megabyte of spaces costs no second megabyte.
    return BLANK if not pending or pending.isspace() else bytes(pending)


@dataclass
class ChunkWriter:
    """Groups consecutive lines into chunks of `batch_lines` articles and inserts each chunk
    as soon as it is full."""

    session: AsyncSession
    import_id: int
    batch_lines: int
    seq: int = 0
    lines: int = 0  # every line so far, blank ones included
    articles: int = 0  # the lines that are not blank: the import's total
    too_long: list[int] = field(default_factory=list)
    _data: bytearray = field(default_factory=bytearray)
    _first: int = 0
    _count: int = 0  # articles in the open chunk

    async def add(self, number: int, line: bytes | None) -> None:
        self.lines += 1
        if line is None:
            self.articles += 1
            self.too_long.append(number)
            await self._flush()  # a chunk holds consecutive lines only
            return
        if not line:  # BLANK
            if self._count:  # before a chunk's first article, nothing needs numbering
                self._data += b"\n"
        else:
            if not self._count:
                self._first = number
            self._data += line
            self._data += b"\n"
            self.articles += 1
            self._count += 1
        if self._count >= self.batch_lines or len(self._data) >= CHUNK_MAX_BYTES:
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
                    data=bytes(self._data.rstrip(b"\n")),
                )
            )
            self.seq += 1
        self._data.clear()
        self._count = 0
