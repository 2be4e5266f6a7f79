"""Articles and favorites. Reads return finished JSON text (see queries.py); a write returns
the article as its author sees it right after the change, read in the same transaction."""

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from sqlalchemy import ARRAY, BigInteger, Text, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles import fields, pages, queries, slugs
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

COUNT_SHARDS = 16
FOREIGN_KEY_VIOLATION = "23503"

RESERVED_SLUGS = slugs.RESERVED

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
    q: str | None = None,
    limit: int,
    offset: int,
    cursor: str | None = None,
    cursor_key: bytes,
    only: str | None = None,
) -> str:
    """A page of articles (newest first; a search `q`: title matches first), how many match
    in all and the next page's cursor: one statement, JSON out, through the shared cache.
    `only`: the article fields to keep (`fields=`, app/articles/fields.py)."""
    selection = fields.parse(only, allowed=fields.SUMMARY_FIELDS)
    if q is not None and not q.strip():
        q = None  # a blank search is no search
    filters = queries.Filters(tag=tag, author=author, favorited_by=favorited_by, q=q)
    window = pages.window(filters, limit=limit, offset=offset, cursor=cursor, key=cursor_key)

    async def load(viewer: int | None) -> str:
        async with connect() as db:
            return await pages.load(db, filters, viewer, window, key=cursor_key)

    # A cursor page is not cached: cursors are endless keys, and such a page costs the same
    # at any depth.
    if window.after is not None or not cached_page(limit=limit, offset=offset):
        return _shaped(await load(viewer_id), selection)
    document = await read_through(
        cache,
        connect,
        family="articles",
        key=f"articles:{dumps([tag, author, favorited_by, q, limit, offset])}",
        versions=_listing(filters),
        viewer_id=viewer_id,
        load=load,
        items=_listed,
    )
    assert document is not None  # noqa: S101 - a page always exists
    return _shaped(document, selection)


def _listing(filters: queries.Filters) -> list[str]:
    """The versions of which articles a page lists; what each of them shows is an item
    (`article:<slug>`, `_listed`). A page narrowed to a tag or an author changes only with
    that tag's or author's articles: a publish elsewhere leaves it cached, where one
    version of every list ("articles") made every page live less than a second under a
    publish a second. Searches and favorites pages stay on "articles": a new article may
    match a search, and a deletion changes its favoriters' pages; an edit may make an article
    match a search or stop matching it ("searches")."""
    stamp = [versions.LISTS, versions.AUTHORS]
    if filters.favorited_by is not None:
        stamp.append(versions.favorites(filters.favorited_by))
    narrowed = filters.tag is not None or filters.author is not None
    if not narrowed or filters.q is not None or filters.favorited_by is not None:
        stamp.append(versions.ARTICLES)
    if filters.q is not None:
        stamp.append(versions.SEARCHES)
    if filters.tag is not None:
        stamp.append(versions.tagged(filters.tag))
    if filters.author is not None:
        stamp.append(versions.authored(filters.author))
    return stamp


def _shaped(document: str, selection: fields.Selection | None) -> str:
    return document if selection is None else selection.apply(document)


def cached_page(*, limit: int, offset: int) -> bool:
    return limit in CACHED_LIMITS and offset % limit == 0 and offset < limit * CACHED_PAGES


def _listed(page: str) -> list[str]:
    """The item versions of a page: one per article it shows."""
    return [versions.article(article["slug"]) for article in orjson.loads(page)["articles"]]


async def feed(
    connect: Connect,
    *,
    viewer_id: int,
    limit: int,
    offset: int,
    cursor: str | None = None,
    cursor_key: bytes,
    only: str | None = None,
) -> str:
    """A page of articles by the authors the viewer follows, newest first, as JSON (personal:
    never cached)."""
    selection = fields.parse(only, allowed=fields.SUMMARY_FIELDS)
    filters = queries.Filters(followed_by=viewer_id)
    window = pages.window(filters, limit=limit, offset=offset, cursor=cursor, key=cursor_key)
    async with connect() as db:
        document = await pages.load(db, filters, viewer_id, window, key=cursor_key)
    return _shaped(document, selection)


@dataclass(frozen=True, slots=True)
class Moved:
    """The slug asked for is an old one: the article is now at `slug`."""

    slug: str


async def get_cached(
    connect: Connect,
    cache: Cache,
    *,
    slug: str,
    viewer_id: int | None,
    only: str | None = None,
) -> str | Moved:
    """`{"article": ...}` with its body, as the viewer sees it, through the shared cache; or
    where the article went, for a slug it had before its title changed."""
    selection = fields.parse(only, allowed=fields.ARTICLE_FIELDS)

    async def load(viewer: int | None) -> str | None:
        async with connect() as db:
            document: str | None = await db.scalar(*queries.single(slug, viewer))
        return document

    document = await read_through(
        cache,
        connect,
        family="article",
        key=f"article:{slug}",
        versions=[versions.article(slug), versions.AUTHORS],
        viewer_id=viewer_id,
        load=load,
    )
    if document is not None:
        return _shaped(document, selection)
    return await moved(connect, slug)


async def moved(connect: Connect, slug: str) -> Moved:
    """Where the article that had `slug` before its title changed is now (a read of an old
    link, the article's or its comments'); NotFound if no article had it."""
    async with connect() as db:
        current = await slugs.moved_to(db, slug)
    if current is None:
        raise NotFound(f"article {slug!r} not found")
    return Moved(current)


async def get(session: AsyncSession, *, slug: str, viewer_id: int | None) -> str:
    """`{"article": ...}` read in the caller's transaction (after a write: the writer's view),
    through the ORM: public reads run on the driver (`get_cached`, app/db_reads.py)."""
    document = await session.scalar(*queries.single(slug, viewer_id))
    if document is None:
        raise NotFound(f"article {slug!r} not found")
    return document


async def get_row(session: AsyncSession, slug: str) -> ArticleRow:
    """The article row for a write, by its slug or one it had before; NotFound if none."""
    article = await session.scalar(select(ArticleRow).where(ArticleRow.slug == slug))
    if article is None:
        article = await slugs.formerly(session, slug)
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
    for candidate in slugs.candidates(slugs.base(data.title)):
        row = select(
            literal(candidate, Text),
            literal(data.title, Text),
            literal(data.description, Text),
            literal(data.body, Text),
            literal(tags, ARRAY(Text)),
            literal(author.id, BigInteger),
        ).where(slugs.unused(candidate))
        statement = (
            insert(ArticleRow)
            .from_select(_NEW_ROW, row)
            .on_conflict_do_nothing(index_elements=[ArticleRow.slug])
            .returning(ArticleRow.slug)
        )
        # The counters' triggers lock a few shared rows: a deadlock is retried, not a 503.
        slug = await in_savepoint(session, partial(session.scalar, statement))
        if slug is not None:
            published(session, author=author.username, tags=tags)
            document = await get(session, slug=slug, viewer_id=author.id)
            await events.record(
                session, events.ARTICLE_PUBLISHED, owner_id=author.id, data=document
            )
            return document
    raise AssertionError("unreachable: slug candidates are endless")


_NEW_ROW = ("slug", "title", "description", "body", "tag_list", "author_id")


def published(session: AsyncSession, *, author: str, tags: Iterable[str]) -> None:
    """Inside a write that adds an article: the lists that show it, and its tags in use."""
    changed(session, versions.ARTICLES, versions.TAGS, *_lists_of(author, tags))


def published_in_bulk(session: AsyncSession) -> None:
    """Inside a write that adds articles of any tags (an import chunk): every list."""
    changed(session, versions.LISTS, versions.ARTICLES, versions.TAGS)


def _lists_of(author: str, tags: Iterable[str]) -> list[str]:
    """The versions of the narrowed lists an article is in (`_listing`)."""
    return [versions.authored(author), *(versions.tagged(tag) for tag in tags)]


async def update_article(
    session: AsyncSession, *, slug: str, user: User, changes: dict[str, Any]
) -> str:
    """Change title, description or body of one's own article; a new title gives a new
    slug, and the old one keeps leading to the article (app/articles/slugs.py)."""
    article = await _own(session, slug=slug, user=user)
    if not changes:
        raise Invalid("article: at least one field is required")
    if any(value is None for value in changes.values()):
        raise Invalid("article: fields may not be null")
    current = article.slug
    if "title" in changes:
        current = await slugs.follow_title(session, article, changes["title"])
    await session.execute(
        update(ArticleRow)
        .where(ArticleRow.id == article.id)
        .values(**changes, updated_at=func.now())
    )
    # What it shows, and which searches find it, not which other lists show it; under a new
    # slug, also its comments' page and the viewers' sets of favorites, which name it by its
    # slug.
    item_changed(session, versions.article(article.slug), versions.article(current))
    changed(session, versions.SEARCHES)  # the title, description or body searches match
    if current != article.slug:
        changed(session, versions.comments(article.slug), versions.SLUGS)
    return await get(session, slug=current, viewer_id=user.id)


async def delete_article(session: AsyncSession, *, slug: str, user: User) -> None:
    """Delete one's own article with its comments and favorites."""
    article = await _own(session, slug=slug, user=user)
    lists = _lists_of(user.username, article.tag_list)
    removal = delete(ArticleRow).where(ArticleRow.id == article.id)
    # The counters' triggers lock a few shared rows: a deadlock is retried, not a 503.
    await in_savepoint(session, lambda: session.execute(removal))
    # Its slug is free again: a viewer's set of favorites that names it must not flag a new
    # article that takes it.
    changed(session, versions.ARTICLES, versions.SLUGS, versions.comments(article.slug), *lists)
    item_changed(session, versions.article(article.slug))


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
            _favorites_changed(session, article.slug, user)

    with deleted_meanwhile(slug):
        await in_savepoint(session, add)
    return await get(session, slug=article.slug, viewer_id=user.id)


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
            _favorites_changed(session, article.slug, user)

    await in_savepoint(session, remove)
    return await get(session, slug=article.slug, viewer_id=user.id)


@contextmanager
def deleted_meanwhile(slug: str) -> Iterator[None]:
    """Around an insert that refers to an article read a moment before (a favorite, a
    comment): if its author deleted it in between, the foreign key says so, and the answer
    is 404, as if the write had come after the deletion."""
    try:
        yield
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != FOREIGN_KEY_VIOLATION:
            raise
        raise NotFound(f"article {slug!r} not found") from None


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
