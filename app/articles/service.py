"""Articles and favorites. Reads return finished JSON text (see queries.py); a write returns
the article as its author sees it right after the change, read in the same transaction."""

import secrets
from collections.abc import Iterator
from typing import Any

import orjson
from slugify import slugify
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.articles import queries
from app.articles.schemas import NewArticle
from app.cache import versions
from app.cache.store import Cache, changed, dumps, item_changed
from app.cache.viewer import read_through, viewer_changed
from app.db import Connect
from app.errors import Forbidden, Invalid, NotFound
from app.events import service as events
from app.models import Article as ArticleRow
from app.models import Favorite, FavoriteCountShard, Tag, User
from app.retry import in_savepoint

# Reads run on an autocommit connection (one statement is its own snapshot) or, after a
# write, inside the request's transaction.
Reader = AsyncConnection | AsyncSession

COUNT_SHARDS = 16

# `/articles/feed` is a route of its own, so no article may be called "feed".
RESERVED_SLUGS = frozenset({"feed"})

# Only the pages clients ask for are cached: the usual sizes, on page boundaries, the first
# CACHED_PAGES deep. Any other page is read from PostgreSQL, so that varying limit and offset
# cannot mint cache entries without end (an anonymous crawl once filled Redis this way).
CACHED_LIMITS = frozenset({1, 5, 10, 20, 50, 100})
CACHED_PAGES = 50


async def list_articles(
    connect: Connect,
    cache: Cache,
    *,
    viewer_id: int | None,
    tag: str | None,
    author: str | None,
    favorited_by: str | None,
    limit: int,
    offset: int,
) -> str:
    """A page of articles, newest first, and how many match in all: one statement, JSON out,
    through the shared cache."""
    filters = queries.Filters(tag=tag, author=author, favorited_by=favorited_by)

    async def load(viewer: int | None) -> str:
        async with connect() as db:
            return await _document(db, *queries.page(filters, viewer, limit=limit, offset=offset))

    if not cached_page(limit=limit, offset=offset):
        return await load(viewer_id)
    # A page depends on which articles it lists ("articles": publish, delete; a favoriter's
    # page: their favorites) and on what each of them shows (`article:<slug>`, as an item).
    stamp = [versions.ARTICLES, versions.AUTHORS]
    if favorited_by is not None:
        stamp.append(versions.favorites(favorited_by))
    document = await read_through(
        cache,
        connect,
        family="articles",
        key=f"articles:{dumps([tag, author, favorited_by, limit, offset])}",
        versions=stamp,
        viewer_id=viewer_id,
        load=load,
        items=_listed,
    )
    assert document is not None  # noqa: S101 - a page always exists
    return document


def cached_page(*, limit: int, offset: int) -> bool:
    return limit in CACHED_LIMITS and offset % limit == 0 and offset < limit * CACHED_PAGES


def _listed(page: str) -> list[str]:
    """The item versions of a page: one per article it shows."""
    return [versions.article(article["slug"]) for article in orjson.loads(page)["articles"]]


async def feed(connect: Connect, *, viewer_id: int, limit: int, offset: int) -> str:
    """A page of articles by the authors the viewer follows, newest first, as JSON (personal:
    never cached)."""
    filters = queries.Filters(followed_by=viewer_id)
    async with connect() as db:
        return await _document(db, *queries.page(filters, viewer_id, limit=limit, offset=offset))


async def get_cached(connect: Connect, cache: Cache, *, slug: str, viewer_id: int | None) -> str:
    """`{"article": ...}` with its body, as the viewer sees it, through the shared cache."""

    async def load(viewer: int | None) -> str | None:
        async with connect() as db:
            return await db.scalar(*queries.single(slug, viewer))

    document = await read_through(
        cache,
        connect,
        family="article",
        key=f"article:{slug}",
        versions=[versions.article(slug), versions.AUTHORS],
        viewer_id=viewer_id,
        load=load,
    )
    if document is None:
        raise NotFound(f"article {slug!r} not found")
    return document


async def get(db: Reader, *, slug: str, viewer_id: int | None) -> str:
    """`{"article": ...}` read in the caller's transaction (after a write: the writer's view)."""
    document = await db.scalar(*queries.single(slug, viewer_id))
    if document is None:
        raise NotFound(f"article {slug!r} not found")
    return document


async def get_row(session: AsyncSession, slug: str) -> ArticleRow:
    """The article row for a write; NotFound when the slug is unknown."""
    article = await session.scalar(select(ArticleRow).where(ArticleRow.slug == slug))
    if article is None:
        raise NotFound(f"article {slug!r} not found")
    return article


async def create(session: AsyncSession, *, author: User, data: NewArticle) -> str:
    """Publish an article; its slug comes from the title and is unique."""
    # Sorted, as RealWorld clients expect; it also makes concurrent publishers take the
    # tag rows' locks in one order, so they cannot deadlock.
    tags = sorted(set(data.tag_list))
    if tags:
        rows = [{"name": name} for name in tags]
        await session.execute(insert(Tag).values(rows).on_conflict_do_nothing())
    base = slugify(data.title, max_length=80) or "article"
    for candidate in _slug_candidates(base):
        slug = await session.scalar(
            insert(ArticleRow)
            .values(
                slug=candidate,
                title=data.title,
                description=data.description,
                body=data.body,
                tag_list=tags,
                author_id=author.id,
            )
            .on_conflict_do_nothing(index_elements=[ArticleRow.slug])
            .returning(ArticleRow.slug)
        )
        if slug is not None:
            published(session)
            document = await get(session, slug=slug, viewer_id=author.id)
            await events.record(
                session, events.ARTICLE_PUBLISHED, owner_id=author.id, data=document
            )
            return document
    raise AssertionError("unreachable: slug candidates are endless")


def published(session: AsyncSession) -> None:
    """Inside a write that adds articles: every list shows them, and their tags are in use."""
    changed(session, versions.ARTICLES, versions.TAGS)


async def update_article(
    session: AsyncSession, *, slug: str, user: User, changes: dict[str, Any]
) -> str:
    """Change title, description or body of one's own article."""
    article = await _own(session, slug=slug, user=user)
    if not changes:
        raise Invalid("article: at least one field is required")
    if any(value is None for value in changes.values()):
        raise Invalid("article: fields may not be null")
    await session.execute(
        update(ArticleRow)
        .where(ArticleRow.id == article.id)
        .values(**changes, updated_at=func.now())
    )
    item_changed(session, versions.article(slug))  # what it shows, not which lists show it
    return await get(session, slug=slug, viewer_id=user.id)


async def delete_article(session: AsyncSession, *, slug: str, user: User) -> None:
    """Delete one's own article with its comments and favorites."""
    article = await _own(session, slug=slug, user=user)
    await session.execute(delete(ArticleRow).where(ArticleRow.id == article.id))
    changed(session, versions.ARTICLES, versions.comments(slug))
    item_changed(session, versions.article(slug))


async def favorite(session: AsyncSession, *, slug: str, user: User) -> str:
    """Favorite an article; twice is the same as once, and the count stays exact."""
    article = await get_row(session, slug)

    async def add() -> None:
        added = await session.scalar(
            insert(Favorite)
            .values(user_id=user.id, article_id=article.id)
            .on_conflict_do_nothing()
            .returning(Favorite.article_id)
        )
        if added is not None:
            await _count(session, article.id, 1)
            _favorites_changed(session, slug, user)

    await in_savepoint(session, add)
    return await get(session, slug=slug, viewer_id=user.id)


async def unfavorite(session: AsyncSession, *, slug: str, user: User) -> str:
    """Remove a favorite; removing one that is not there changes nothing."""
    article = await get_row(session, slug)

    async def remove() -> None:
        removed = await session.scalar(
            delete(Favorite)
            .where(Favorite.user_id == user.id, Favorite.article_id == article.id)
            .returning(Favorite.article_id)
        )
        if removed is not None:
            await _count(session, article.id, -1)
            _favorites_changed(session, slug, user)

    await in_savepoint(session, remove)
    return await get(session, slug=slug, viewer_id=user.id)


def _favorites_changed(session: AsyncSession, slug: str, user: User) -> None:
    """The article's favoritesCount (wherever it is shown), the user's favorites page, and
    their own `favorited` flags."""
    item_changed(session, versions.article(slug))
    changed(session, versions.favorites(user.username))
    viewer_changed(session, user.id)


async def _count(session: AsyncSession, article_id: int, delta: int) -> None:
    # One of N shard rows at random, in the favorite's transaction: exact, and concurrent
    # favorites of one article queue on N row locks, not one (see FavoriteCountShard).
    shard = secrets.randbelow(COUNT_SHARDS)
    statement = insert(FavoriteCountShard).values(article_id=article_id, shard=shard, delta=delta)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[FavoriteCountShard.article_id, FavoriteCountShard.shard],
            set_={"delta": FavoriteCountShard.delta + statement.excluded.delta},
        )
    )


async def _own(session: AsyncSession, *, slug: str, user: User) -> ArticleRow:
    article = await get_row(session, slug)
    if article.author_id != user.id:
        raise Forbidden("only the author may change this article")
    return article


async def _document(db: Reader, statement: Select[str], params: dict[str, object]) -> str:
    document = await db.scalar(statement, params)
    assert document is not None  # noqa: S101 - an aggregate always yields one row
    return document


def _slug_candidates(base: str) -> Iterator[str]:
    if base not in RESERVED_SLUGS:
        yield base
    while True:
        yield f"{base}-{secrets.token_hex(4)}"
