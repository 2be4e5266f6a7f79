"""Slugs follow titles, and old slugs keep working.

A slug is the title's words (`how-to-train-your-dragon`), with a random suffix when taken.
A new title gives a new slug; the old one goes to `article_slugs`, so a link to it still
reaches the article: `GET /articles/{old}` answers 301 with the current URL, and writes
(update, delete, favorite, comment) act on the article itself. A slug in that history is
not given to another article, so an old link never leads somewhere else (imports, which
insert in bulk, skip it too; two writers racing for one slug get distinct ones, by the
unique index).
"""

import re
import secrets
from collections.abc import Iterator

from slugify import slugify
from sqlalchemy import ColumnElement, Select, Text, bindparam, delete, exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db_reads import ReadConnection
from app.errors import NotFound
from app.models import Article, ArticleSlug

# `/articles/feed` is a route of its own, so no article may be called "feed".
RESERVED = frozenset({"feed"})
_SUFFIX = re.compile(r"-[0-9a-f]{8}")


def base(title: str) -> str:
    return slugify(title, max_length=80) or "article"


def candidates(slug_base: str) -> Iterator[str]:
    """The base itself (unless reserved), then the base with random suffixes, endlessly."""
    if slug_base not in RESERVED:
        yield slug_base
    while True:
        yield f"{slug_base}-{secrets.token_hex(4)}"


async def _still_there(session: AsyncSession, article: Article) -> None:
    """NotFound if its author deleted the article while it was being renamed: no candidate
    would ever be taken, and the loop would spin until the request's deadline."""
    if await session.scalar(select(Article.id).where(Article.id == article.id)) is None:
        raise NotFound(f"article {article.slug!r} not found")


def unused(slug: str, *, by_other_than: int | None = None) -> ColumnElement[bool]:
    """No article (but `by_other_than`) had `slug` before: old links keep their article."""
    had = exists().where(ArticleSlug.slug == slug)
    if by_other_than is not None:
        had = had.where(ArticleSlug.article_id != by_other_than)
    return ~had


async def moved_to(db: ReadConnection, slug: str) -> str | None:
    """The current slug of the article that had `slug` before; None if none had."""
    current: str | None = await db.scalar(_MOVED_TO, {"slug": slug})
    return current


# Built once: reads run on the driver, which compiles each statement object once.
_MOVED_TO: Select[str] = (
    select(Article.slug)
    .join(ArticleSlug, ArticleSlug.article_id == Article.id)
    .where(ArticleSlug.slug == bindparam("slug", type_=Text))
)


async def formerly(session: AsyncSession, slug: str) -> Article | None:
    """The article that had `slug` before its title changed (a write to an old link)."""
    statement = (
        select(Article)
        .join(ArticleSlug, ArticleSlug.article_id == Article.id)
        .where(ArticleSlug.slug == slug)
    )
    article: Article | None = await session.scalar(statement)
    return article


async def follow_title(session: AsyncSession, article: Article, title: str) -> str:
    """The article's slug after its title becomes `title`: unchanged when the title's words
    are the same; else a new one, and the old one kept in the history."""
    wanted = base(title)
    old = article.slug
    if old == wanted or (old.startswith(wanted) and _SUFFIX.fullmatch(old[len(wanted) :])):
        return old
    for candidate in candidates(wanted):
        renamed = (
            update(Article)
            .where(Article.id == article.id, unused(candidate, by_other_than=article.id))
            .values(slug=candidate)
            .returning(Article.id)
            .execution_options(synchronize_session=False)
        )
        try:
            async with session.begin_nested():
                if await session.scalar(renamed) is None:
                    await _still_there(session, article)
                    continue  # an old slug of another article
        except IntegrityError:  # the slug of another article (or taken just now)
            continue
        await session.execute(
            delete(ArticleSlug).where(
                ArticleSlug.slug == candidate, ArticleSlug.article_id == article.id
            )
        )
        keep = insert(ArticleSlug).values(slug=old, article_id=article.id)
        await session.execute(
            keep.on_conflict_do_update(
                index_elements=[ArticleSlug.slug], set_={"article_id": article.id}
            )
        )
        return candidate
    raise AssertionError("unreachable: slug candidates are endless")
