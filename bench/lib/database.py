"""What the benchmarks read from the database they load: its size, its server, and the
slugs, users and tags the load generators pick from."""

from typing import Any

import psycopg
from psycopg import sql

TABLES = ("users", "articles", "comments", "favorites", "follows", "tags")


def plain_url(url: str) -> str:
    """libpq wants `postgresql://`; accept the app's SQLAlchemy spelling too."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url


def dataset(url: str) -> tuple[dict[str, int], dict[str, str]]:
    """Rows per table, and the server's version and connection limit."""
    with psycopg.connect(plain_url(url)) as conn:
        counts = {}
        for table in TABLES:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            counts[table] = row[0] if row else 0
        version = conn.execute("SHOW server_version").fetchone()
        max_conn = conn.execute("SHOW max_connections").fetchone()
    return counts, {
        "PostgreSQL": version[0] if version else "?",
        "PostgreSQL max_connections": max_conn[0] if max_conn else "?",
    }


def sample_slugs(url: str, count: int) -> list[str]:
    """`count` article slugs, the same ones for the same data set."""
    with psycopg.connect(plain_url(url)) as conn:
        rows = conn.execute("SELECT slug FROM articles ORDER BY md5(slug) LIMIT %s", (count,))
        return [row[0] for row in rows]


def sample_usernames(url: str, count: int) -> list[str]:
    """`count` usernames, the same ones for the same data set."""
    with psycopg.connect(plain_url(url)) as conn:
        query = "SELECT username FROM users ORDER BY md5(username) LIMIT %s"
        return [row[0] for row in conn.execute(query, (count,))]


def sample_data(url: str) -> dict[str, Any]:
    """What the load generators pick from: real slugs, usernames and popular tags."""
    slugs = sample_slugs(url, 500)
    users = sample_usernames(url, 300)
    with psycopg.connect(plain_url(url)) as conn:
        tags = [
            r[0]
            for r in conn.execute(
                "SELECT tag FROM (SELECT unnest(tag_list) AS tag FROM articles LIMIT 20000) t"
                " GROUP BY tag ORDER BY count(*) DESC LIMIT 50"
            )
        ]
        viral = conn.execute(
            "SELECT slug FROM articles ORDER BY favorites_count DESC, id LIMIT 1"
        ).fetchone()
    return {"slugs": slugs, "users": users, "tags": tags, "viral": viral[0] if viral else slugs[0]}
