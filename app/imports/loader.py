"""Bulk imports, worker side: one chunk (a batch of lines) per transaction.

Exactly once: the batch's articles, its line errors, the deletion of its chunk and the
import's cursor and counters commit together, under a lock on the import's row. A worker
killed mid-batch leaves nothing of that batch; the retried job takes the first chunk still
there, so every line is imported once, whichever worker runs it and however often.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError
from slugify import slugify
from sqlalchemy import ColumnElement, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles import service as articles
from app.articles.schemas import NewArticle
from app.models import Import, ImportChunk, ImportLineError, Tag

SLUG_ROUNDS = 8

_INSERT_ARTICLES = text(
    "INSERT INTO articles (slug, title, description, body, tag_list, author_id) "
    "SELECT slug, title, description, body, "
    "ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), :author_id "
    "FROM unnest(CAST(:slugs AS text[]), CAST(:titles AS text[]), "
    "CAST(:descriptions AS text[]), CAST(:bodies AS text[]), CAST(:tags AS text[])) "
    "WITH ORDINALITY AS input(slug, title, description, body, tags, n) "
    # A slug an article had before its title changed leads there: not given again.
    "WHERE NOT EXISTS (SELECT FROM article_slugs AS old WHERE old.slug = input.slug) "
    "ORDER BY n ON CONFLICT (slug) DO NOTHING RETURNING slug"
)


@dataclass(frozen=True, slots=True)
class Progress:
    state: str  # queued, running, done, failed, gone (deleted)
    processed_lines: int
    total_lines: int

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "gone")


async def import_next_batch(session: AsyncSession, *, import_id: int) -> Progress:
    """Import the import's next chunk, or mark it done when none is left."""
    row = await session.scalar(select(Import).where(Import.id == import_id).with_for_update())
    if row is None:
        return Progress("gone", 0, 0)
    if row.state in ("done", "failed"):
        return _progress(row)
    chunk = await session.scalar(
        select(ImportChunk)
        .where(ImportChunk.import_id == import_id)
        .order_by(ImportChunk.seq)
        .limit(1)
    )
    if row.state == "queued":
        row.state, row.started_at = "running", func.now()
    if chunk is None:
        row.state, row.finished_at = "done", func.now()
    else:
        articles_in, errors, lines = parse(chunk.first_line, chunk.data)
        await _insert(session, author_id=row.user_id, batch=articles_in)
        if errors:
            await session.execute(
                insert(ImportLineError).on_conflict_do_nothing(),
                [{"import_id": import_id, "line": n, "message": m} for n, m in errors],
            )
        await session.execute(
            delete(ImportChunk).where(
                ImportChunk.import_id == import_id, ImportChunk.seq == chunk.seq
            )
        )
        row.processed_lines += lines
        row.imported_count += len(articles_in)
        row.failed_count += len(errors)
        row.next_seq = chunk.seq + 1
    row.updated_at = func.now()
    await session.flush()
    await session.refresh(row)
    return _progress(row)


async def fail(session: AsyncSession, *, import_id: int, error: str) -> None:
    """Give up on an import (its job failed every retry); what was committed stays."""
    row = await session.scalar(select(Import).where(Import.id == import_id).with_for_update())
    if row is not None and row.state not in ("done", "failed"):
        row.state, row.error, row.finished_at = "failed", error[:1000], func.now()
        row.updated_at = func.now()


def parse(first_line: int, data: bytes) -> tuple[list[NewArticle], list[tuple[int, str]], int]:
    """Valid articles, (line, message) for the others, and the number of non-blank lines.
    A line is an article object, or `{"article": {...}}` as the API takes it."""
    good: list[NewArticle] = []
    errors: list[tuple[int, str]] = []
    counted = 0
    for offset, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        counted += 1
        number = first_line + offset
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append((number, f"invalid JSON: {exc}"))
            continue
        if isinstance(value, dict) and isinstance(value.get("article"), dict):
            value = value["article"]
        try:
            good.append(NewArticle.model_validate(value))
        except ValidationError as exc:
            errors.append((number, _message(exc)))
    return good, errors, counted


async def _insert(session: AsyncSession, *, author_id: int, batch: list[NewArticle]) -> None:
    """One multi-row INSERT (arrays through unnest: six parameters whatever the batch size);
    rows whose slug is taken are sent again with a random suffix, as `articles.create` does."""
    if not batch:
        return
    articles.published_in_bulk(session)  # every list and /api/tags, once this chunk commits
    tags = sorted({tag for article in batch for tag in article.tag_list})
    if tags:  # sorted: concurrent writers lock tag rows in one order
        await session.execute(insert(Tag).on_conflict_do_nothing(), [{"name": t} for t in tags])
    bases = [slugify(article.title, max_length=80) or "article" for article in batch]
    waiting = dict(zip(_first_slugs(bases), zip(bases, batch, strict=True), strict=True))
    for _ in range(SLUG_ROUNDS):
        rows = [(slug, article) for slug, (_, article) in waiting.items()]
        inserted = set(
            await session.scalars(
                _INSERT_ARTICLES,
                {
                    "author_id": author_id,
                    "slugs": [slug for slug, _ in rows],
                    "titles": [a.title for _, a in rows],
                    "descriptions": [a.description for _, a in rows],
                    "bodies": [a.body for _, a in rows],
                    "tags": [orjson.dumps(sorted(set(a.tag_list))).decode() for _, a in rows],
                },
            )
        )
        waiting = {
            _suffixed(base): (base, article)
            for slug, (base, article) in waiting.items()
            if slug not in inserted
        }
        if not waiting:
            return
    raise RuntimeError(f"could not find free slugs for {len(waiting)} articles")


def _first_slugs(bases: list[str]) -> list[str]:
    """The title's slug, unless reserved or already used in this batch."""
    seen: set[str] = set()
    slugs = []
    for base in bases:
        slug = _suffixed(base) if base in seen or base in articles.RESERVED_SLUGS else base
        seen.add(slug)
        slugs.append(slug)
    return slugs


def _suffixed(base: str) -> str:
    return f"{base}-{secrets.token_hex(4)}"


def _message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "article"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _progress(row: Import) -> Progress:
    return Progress(row.state, row.processed_lines, row.total_lines)


async def stalled(session: AsyncSession, *, queued_s: float, running_s: float) -> list[int]:
    """Imports that no job seems to be working on: queued for `queued_s` (the queue was down
    at commit, or lost the job) or running without progress for `running_s` (killed worker)."""
    ids = await session.scalars(
        select(Import.id).where(
            ((Import.state == "queued") & (Import.updated_at < _ago(queued_s)))
            | ((Import.state == "running") & (Import.updated_at < _ago(running_s)))
        )
    )
    return list(ids)


def _ago(seconds: float) -> ColumnElement[datetime]:
    return func.now() - timedelta(seconds=seconds)
