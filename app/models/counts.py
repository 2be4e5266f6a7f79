"""Exact list counts (`articlesCount`) without `count(*)` and without a hot row.

Each counter is spread over `SHARDS` rows; a read sums them (at most SHARDS index entries).
They are kept by triggers on `articles` and `favorites` (migration 7c1e0a4d2b9f), in the
transaction of every write that changes them, whoever writes: the API, an import, a test
factory, psql. A transaction adds its deltas to one shard per counter, chosen by its
transaction id, so concurrent writers spread over SHARDS row locks and one writer's
statements never lock two shards of one counter. `python -m app.counts check` compares
every counter with `count(*)` (docs/DATA.md).

No foreign keys: a counter outlives nothing it counts (it sums to zero once its rows are
gone), and a key here would make a user's deletion cascade into rows its own cascade is
still updating.
"""

from sqlalchemy import BigInteger, Integer, SmallInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

SHARDS = 16  # the triggers' `% 16`: change both together, with a migration


class ArticleCountShard(Base):
    """Every article: the global list."""

    __tablename__ = "article_count_shards"

    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    articles: Mapped[int] = mapped_column(BigInteger)


class TagCountShard(Base):
    """Articles carrying one tag."""

    __tablename__ = "tag_count_shards"

    tag: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    articles: Mapped[int] = mapped_column(Integer)


class UserCountShard(Base):
    """Per user: articles written (the author's list, and the feed, summed over followees)
    and articles favorited (the favoriter's list)."""

    __tablename__ = "user_count_shards"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    articles: Mapped[int] = mapped_column(Integer, server_default="0")
    favorites: Mapped[int] = mapped_column(Integer, server_default="0")
