"""Fill a migrated Conduit database with a reproducible, realistic data set, fast.

Rows go in with COPY (psycopg 3 `cursor.copy()`), inside one transaction that first
truncates every table, so each COPY can use FREEZE (no hint-bit rewrite on first read).
Ids are assigned here and the identity sequences moved past them afterwards, so the API
can insert right away. Every user's password is `password`. `python -m bench.seed` is the
command line; the stack benchmarks call `fill` before they measure.
"""

import bisect
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from app.counts.drift import REBUILD
from app.security import HASHER
from bench.lib.database import plain_url

PASSWORD = "password"  # noqa: S105 - every seeded user's password, for bench logins
YEAR_S = 365 * 24 * 3600
TAG_ZIPF_S = 1.1  # tag popularity ~ 1 / rank^s: a few tags everywhere, a long tail
TABLES = ("favorites", "follows", "comments", "articles", "tags", "users")
# Their triggers keep the list counters (app/models/counts.py): off during COPY (a statement
# trigger would hold every copied row in a transition table), then the counters are rebuilt.
COUNTED = ("articles", "favorites")
COUNTERS = ("article_count_shards", "tag_count_shards", "user_count_shards")
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum async postgres index query "
    "latency cache queue worker pool socket kernel thread lock commit rollback schema table"
)
WORDS = tuple(LOREM.split())
# Tag names are 2-4 of these glued together: pronounceable, distinct, reproducible.
SYLLABLES = tuple(f"{c}{v}" for c in "bdklmnrstvz" for v in "aeiou")


@dataclass(frozen=True)
class Sizes:
    users: int = 10_000
    articles: int = 100_000
    comments: int = 500_000
    favorites: int = 1_000_000
    follows: int = 100_000
    tags: int = 500


PRESETS = {
    "default": Sizes(),
    "small": Sizes(
        users=200, articles=2_000, comments=5_000, favorites=10_000, follows=2_000, tags=100
    ),
    # Ten times the default: what issue 20's size benchmark (bench.sizes) compares with small.
    "large": Sizes(
        users=100_000,
        articles=1_000_000,
        comments=5_000_000,
        favorites=10_000_000,
        follows=1_000_000,
        tags=5_000,
    ),
}


class Corpus:
    """Random text cut from one pre-generated buffer: cheap enough for 300 MB of bodies."""

    def __init__(self, rng: random.Random, words: int = 200_000) -> None:
        parts = []
        for i in range(words):
            parts.append(rng.choice(WORDS))
            parts.append("\n\n" if i % 70 == 69 else " ")
        self._text = "".join(parts)
        self._rng = rng

    def text(self, low: int, high: int) -> str:
        size = self._rng.randint(low, high)
        start = self._rng.randrange(len(self._text) - size)
        return self._text[start : start + size].strip() or "text"

    def words(self, low: int, high: int) -> list[str]:
        return [self._rng.choice(WORDS) for _ in range(self._rng.randint(low, high))]


class Clock:
    """Timestamps within the year before `anchor` (today's UTC midnight: one seed, one data set
    per day), each later than what it belongs to."""

    def __init__(self, rng: random.Random) -> None:
        self.anchor = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self._rng = rng

    def in_past_year(self) -> datetime:
        return self.anchor - timedelta(seconds=self._rng.uniform(0, YEAR_S))

    def after(self, moment: datetime) -> datetime:
        span = (self.anchor - moment).total_seconds()
        return moment + timedelta(seconds=self._rng.uniform(0, span))


def tag_names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct pronounceable tag names; index 0 is the most popular."""
    names: dict[str, None] = {}
    while len(names) < count:
        names["".join(rng.choices(SYLLABLES, k=rng.randint(2, 4)))] = None
    return list(names)


def unique_pairs(rng: random.Random, left: int, right: int, count: int) -> list[int]:
    """`count` distinct codes `l * right + r` (0-based), sorted: primary-key order for COPY."""
    if count > left * right:
        raise SystemExit(f"cannot draw {count} distinct pairs out of {left} x {right}")
    return sorted(rng.sample(range(left * right), count))


def pick_tags(rng: random.Random, names: Sequence[str], cumulative: Sequence[float]) -> list[str]:
    wanted = min(rng.randint(1, 5), len(names))
    chosen: set[str] = set()
    while len(chosen) < wanted:
        chosen.add(names[bisect.bisect(cumulative, rng.random() * cumulative[-1])])
    return sorted(chosen)  # the app stores tag_list sorted


class Seeder:
    def __init__(self, sizes: Sizes, seed: int) -> None:
        self.sizes = sizes
        self.rng = random.Random(seed)
        self.clock = Clock(self.rng)
        self.corpus = Corpus(self.rng)
        self.password_hash = HASHER.hash(PASSWORD)  # the app's own parameters
        self.article_created: list[datetime] = []
        self.used_tags: set[str] = set()
        favorites = unique_pairs(self.rng, sizes.users, sizes.articles, sizes.favorites)
        self.favorites = favorites
        self.favorites_count = [0] * sizes.articles
        for code in favorites:
            self.favorites_count[code % sizes.articles] += 1

    def users(self) -> Iterator[tuple[Any, ...]]:
        for n in range(1, self.sizes.users + 1):
            bio = self.corpus.text(20, 160) if self.rng.random() < 0.5 else ""
            image = f"https://i.pravatar.cc/150?u={n}" if self.rng.random() < 0.3 else None
            created = self.clock.in_past_year()
            yield (n, f"user{n}", f"user{n}@example.com", self.password_hash, bio, image, created)

    def articles(self) -> Iterator[tuple[Any, ...]]:
        names = tag_names(self.rng, self.sizes.tags)
        cumulative: list[float] = []
        total = 0.0
        for rank in range(1, len(names) + 1):
            total += 1 / rank**TAG_ZIPF_S
            cumulative.append(total)
        for n in range(1, self.sizes.articles + 1):
            words = self.corpus.words(3, 8)
            title = " ".join(words).capitalize()
            tags = pick_tags(self.rng, names, cumulative)
            self.used_tags.update(tags)
            created = self.clock.in_past_year()
            updated = self.clock.after(created) if self.rng.random() < 0.2 else created
            self.article_created.append(created)
            author = self.rng.randint(1, self.sizes.users)
            description = self.corpus.text(40, 200)
            body = self.corpus.text(1_000, 5_000)
            slug = f"{'-'.join(words)}-{n}"
            count = self.favorites_count[n - 1]
            yield (n, slug, title, description, body, tags, author, count, created, updated)

    def tags(self) -> Iterator[tuple[Any, ...]]:
        for name in sorted(self.used_tags):
            yield (name,)

    def comments(self) -> Iterator[tuple[Any, ...]]:
        for n in range(1, self.sizes.comments + 1):
            article = self.rng.randint(1, self.sizes.articles)
            created = self.clock.after(self.article_created[article - 1])
            author = self.rng.randint(1, self.sizes.users)
            yield (n, article, author, self.corpus.text(20, 500), created, created)

    def favorite_rows(self) -> Iterator[tuple[Any, ...]]:
        for code in self.favorites:
            user, article = divmod(code, self.sizes.articles)
            yield (user + 1, article + 1, self.clock.after(self.article_created[article]))

    def follows(self) -> Iterator[tuple[Any, ...]]:
        others = self.sizes.users - 1
        for code in unique_pairs(self.rng, self.sizes.users, others, self.sizes.follows):
            follower, other = divmod(code, others)
            followee = other if other < follower else other + 1  # skips follower itself
            yield (follower + 1, followee + 1, self.clock.in_past_year())


Row = tuple[Any, ...]
# In this order: comments and favorites need the articles' dates, tags the articles' tags.
COPIES: tuple[tuple[str, tuple[str, ...], Callable[[Seeder], Iterator[Row]]], ...] = (
    (
        "users",
        ("id", "username", "email", "password_hash", "bio", "image", "created_at"),
        Seeder.users,
    ),
    (
        "articles",
        (
            "id",
            "slug",
            "title",
            "description",
            "body",
            "tag_list",
            "author_id",
            "favorites_count",
            "created_at",
            "updated_at",
        ),
        Seeder.articles,
    ),
    ("tags", ("name",), Seeder.tags),
    (
        "comments",
        ("id", "article_id", "author_id", "body", "created_at", "updated_at"),
        Seeder.comments,
    ),
    ("favorites", ("user_id", "article_id", "created_at"), Seeder.favorite_rows),
    ("follows", ("follower_id", "followee_id", "created_at"), Seeder.follows),
)

# Foreign keys and the indexes that back no constraint, on the seeded tables: dropped before
# COPY and re-created from their catalog definitions after it, in the same transaction (bulk
# builds and one validating join per key beat per-row triggers and index inserts by far).
SECONDARY_DDL = """
SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', conrelid::regclass, conname),
       format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', conrelid::regclass, conname,
              pg_get_constraintdef(oid)),
       2
FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%(tables)s::regclass[])
UNION ALL
SELECT format('DROP INDEX %%s', indexrelid::regclass), pg_get_indexdef(indexrelid), 1
FROM pg_index
WHERE indrelid = ANY(%(tables)s::regclass[])
  AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = indexrelid)
ORDER BY 3
"""


def report(what: str, started: float, rows: int | None = None) -> None:
    took = time.perf_counter() - started
    rate = f"{rows:>11,} rows {rows / took:>10,.0f} rows/s" if rows is not None else ""
    print(f"  {what:<36} {took:6.1f} s {rate}", flush=True)


def ensure_empty(cursor: psycopg.Cursor[Any]) -> None:
    for table in TABLES:
        query = sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(table))
        if cursor.execute(query).fetchone() != (False,):
            raise SystemExit(f"table {table} is not empty: pass --truncate")


def detach_secondary(cursor: psycopg.Cursor[Any]) -> list[str]:
    """Drop foreign keys and plain indexes; return the statements that restore them."""
    rows = cursor.execute(SECONDARY_DDL, {"tables": list(TABLES)}).fetchall()
    for drop, _, _ in reversed(rows):  # keys first, then indexes
        cursor.execute(drop)
    return [create for _, create, _ in rows]  # indexes first: keys validate faster after


def copy_rows(
    cursor: psycopg.Cursor[Any], table: str, columns: Sequence[str], rows: Iterable[Row]
) -> int:
    count = 0
    # FREEZE: rows are written already frozen, so the first reads rewrite no page.
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def load(conn: psycopg.Connection[Any], seeder: Seeder, *, truncate: bool) -> int:
    """Everything in one transaction: an interrupted seed leaves the database as it was."""
    total = 0
    with conn.transaction(), conn.cursor() as cursor:
        if not truncate:
            ensure_empty(cursor)
        # Empty tables too: COPY FREEZE needs a table truncated in the same transaction.
        # CASCADE also empties the tables that hang off these (favorite count shards).
        names = sql.SQL(", ").join(map(sql.Identifier, TABLES))
        cursor.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))
        restore = detach_secondary(cursor)
        for table in COUNTED:
            cursor.execute(
                sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(table))
            )
        for table, columns, rows in COPIES:
            started = time.perf_counter()
            count = copy_rows(cursor, table, columns, rows(seeder))
            report(f"COPY {table}", started, count)
            total += count
        started = time.perf_counter()
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for statement in restore:
            cursor.execute(statement)
        report(f"{len(restore)} indexes and foreign keys", started)
        started = time.perf_counter()
        cursor.execute(REBUILD)
        for table in COUNTED:
            cursor.execute(
                sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(table))
            )
        report("list counters (app/counts)", started)
        for table in ("users", "articles", "comments"):  # the API inserts after the seeded ids
            query = sql.SQL(
                "SELECT setval(pg_get_serial_sequence({}, 'id'), "
                "(SELECT coalesce(max(id), 0) + 1 FROM {}), false)"
            ).format(sql.Literal(table), sql.Identifier(table))
            cursor.execute(query)
    return total


def fill(url: str, sizes: Sizes, *, seed: int = 1, truncate: bool) -> None:
    """Replace what `url` holds (any spelling `plain_url` takes) with the data set `sizes`;
    `seed` picks the rows, so one seed is one data set (per day, see Clock)."""
    if sizes.users < 2 or sizes.articles < 1 or sizes.tags < 1:
        raise SystemExit("need at least 2 users, 1 article and 1 tag")
    started = time.perf_counter()
    seeder = Seeder(sizes, seed)
    print(f"seeding {sizes} (seed {seed})", flush=True)
    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        rows = load(conn, seeder, truncate=truncate)
        vacuuming = time.perf_counter()
        # Planner statistics and visibility map, as a database that has been live a while has.
        vacuumed = (*TABLES, *COUNTERS)
        conn.execute(
            sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(", ").join(map(sql.Identifier, vacuumed)))
        )
        report("VACUUM (ANALYZE)", vacuuming)
    took = time.perf_counter() - started
    print(f"seeded {rows:,} rows in {took:.1f} s: {rows / took:,.0f} rows/s overall")
