from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Computed,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

# Weights: title A, description B, body C. The same text as migration 7c1e0a4d2b9f's.
SEARCH_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, description), 'B') || "
    "setweight(to_tsvector('english'::regconfig, body), 'C')"
)
TITLE_VECTOR = "to_tsvector('english'::regconfig, title)"


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(Text, unique=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    # Denormalised and sorted: a page of articles needs no join for its tags.
    tag_list: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # favoritesCount = favorites_count + the sum of this article's FavoriteCountShard deltas.
    favorites_count: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Full-text search (`?q=`), kept by PostgreSQL; deferred: no write or read of a row needs
    # it in Python, and it is as large as the body.
    search: Mapped[str] = mapped_column(TSVECTOR, Computed(SEARCH_VECTOR), deferred=True)

    __table_args__ = (
        Index("ix_articles_created_at_id", text("created_at DESC"), text("id DESC")),
        Index("ix_articles_author_id_created_at", "author_id", text("created_at DESC")),
        Index("ix_articles_tag_list", "tag_list", postgresql_using="gin"),
        Index("ix_articles_search", "search", postgresql_using="gin"),
        # The title's words alone: search ranks title matches first (app/articles/search.py).
        Index("ix_articles_title_search", text(TITLE_VECTOR), postgresql_using="gin"),
    )


class Favorite(Base):
    __tablename__ = "favorites"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index(None, "article_id"),)


class FavoriteCountShard(Base):
    """Favorite and unfavorite add +1/-1 to one of N rows per article, chosen at random, in
    the favorite's own transaction: a storm on one hot article spreads over N row locks
    instead of queueing on the article's row, and the sum stays exact at all times."""

    __tablename__ = "favorite_count_shards"

    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    delta: Mapped[int] = mapped_column(Integer)


class Tag(Base):
    """Every tag ever used, for `GET /tags`; `articles.tag_list` is the source of truth."""

    __tablename__ = "tags"

    name: Mapped[str] = mapped_column(Text, primary_key=True)


class ArticleSlug(Base):
    """A slug an article had before its title changed: old links still reach it."""

    __tablename__ = "article_slugs"

    slug: Mapped[str] = mapped_column(Text, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        ForeignKey("articles.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
