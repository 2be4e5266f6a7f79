"""Every counter against `count(*)`, read in one snapshot, and the rebuild.

A counter changes in the transaction of the row it counts, so in any one snapshot the two
agree exactly: any difference the check reports is drift (a trigger disabled, rows
written around it), never a write in flight.

`drift` is the command's (`python -m app.counts check`, its own connection); `check` the job
worker's periodic run of the same statement on its pool (app/workers/jobs.py)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# (kind, key, rows counted, counter): only the rows where the two differ.
DRIFT = """
WITH tags AS (
    SELECT t.tag, count(*) AS n
    FROM articles AS a, LATERAL (SELECT DISTINCT unnest(a.tag_list)) AS t(tag)
    GROUP BY t.tag
), tag_counters AS (
    SELECT tag, sum(articles) AS n FROM tag_count_shards GROUP BY tag
), authors AS (
    SELECT author_id AS user_id, count(*) AS n FROM articles GROUP BY author_id
), fans AS (
    SELECT user_id, count(*) AS n FROM favorites GROUP BY user_id
), user_counters AS (
    SELECT user_id, sum(articles) AS articles, sum(favorites) AS favorites
    FROM user_count_shards GROUP BY user_id
)
SELECT 'articles', '', (SELECT count(*) FROM articles),
       (SELECT coalesce(sum(articles), 0) FROM article_count_shards)
UNION ALL
SELECT 'tag', tag, coalesce(c.n, 0), coalesce(k.n, 0)
FROM tags AS c FULL JOIN tag_counters AS k USING (tag)
UNION ALL
SELECT 'author', user_id::text, coalesce(c.n, 0), coalesce(k.articles, 0)
FROM authors AS c FULL JOIN user_counters AS k USING (user_id)
UNION ALL
SELECT 'favoriter', user_id::text, coalesce(c.n, 0), coalesce(k.favorites, 0)
FROM fans AS c FULL JOIN user_counters AS k USING (user_id)
"""

# Writers wait while the counters are rebuilt (SHARE ROW EXCLUSIVE blocks every write of
# the counted tables, not their reads), so none can land between the delete and the insert.
REBUILD = """
LOCK TABLE articles, favorites IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM article_count_shards;
DELETE FROM tag_count_shards;
DELETE FROM user_count_shards;
INSERT INTO article_count_shards (shard, articles) SELECT 0, count(*) FROM articles;
INSERT INTO tag_count_shards (tag, shard, articles)
    SELECT t.tag, 0, count(*)
    FROM articles AS a, LATERAL (SELECT DISTINCT unnest(a.tag_list)) AS t(tag)
    GROUP BY t.tag;
INSERT INTO user_count_shards (user_id, shard, articles, favorites)
    SELECT user_id, 0, sum(articles), sum(favorites)
    FROM (
        SELECT author_id AS user_id, count(*) AS articles, 0 AS favorites
        FROM articles GROUP BY author_id
        UNION ALL
        SELECT user_id, 0, count(*) FROM favorites GROUP BY user_id
    ) AS counted
    GROUP BY user_id;
"""


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str  # articles, tag, author, favoriter
    key: str  # the tag, the user's id, or "" for all articles
    counted: int  # count(*) of the rows
    kept: int  # what the counters say

    def __str__(self) -> str:
        where = f"{self.kind} {self.key}".strip()
        return (
            f"{where}: count(*) {self.counted}, counter {self.kept} ({self.kept - self.counted:+d})"
        )


SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def drift(conn: psycopg.Connection[Any]) -> list[Drift]:
    """Counters that differ from `count(*)`; empty when all are exact. Read in one
    REPEATABLE READ snapshot, so writes in flight cannot show as drift."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(SNAPSHOT)
        rows = cursor.execute(DRIFT).fetchall()
    return _drifted(rows)


async def check(engine: AsyncEngine, *, timeout_s: float) -> list[Drift]:
    """`drift` on a pooled connection (one transaction: fine through PgBouncer in transaction
    mode), cancelled by PostgreSQL itself if it runs longer than `timeout_s`."""
    async with engine.connect() as conn, conn.begin():
        await conn.execute(text(SNAPSHOT))
        await conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"),
            {"ms": str(round(timeout_s * 1000))},
        )
        rows = (await conn.execute(text(DRIFT))).all()
    return _drifted(rows)


def _drifted(rows: Iterable[Sequence[Any]]) -> list[Drift]:
    return [Drift(kind, key, int(c), int(k)) for kind, key, c, k in rows if c != k]


def rebuild(cursor: psycopg.Cursor[Any]) -> None:
    """Recompute every counter from the rows, in the caller's transaction."""
    cursor.execute(REBUILD)
