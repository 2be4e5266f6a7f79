"""The migration back-fills the counters from the rows already there, and computes the
search vectors of existing articles."""

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.config import async_url
from app.counts.drift import drift
from app.migrate import ROOT
from tests.database import _with_database, server_url

REVISION = "7c1e0a4d2b9f"


def test_the_migration_backfills_counters_of_existing_rows():
    admin = server_url()
    name = "conduit_backfill"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(admin, name)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["url"] = async_url(url)
    config.attributes["configure_logging"] = False
    before = ScriptDirectory.from_config(config).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    command.upgrade(config, before)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, email, password_hash) "
            "SELECT 'u' || n, 'u' || n || '@x.io', 'x' FROM generate_series(1, 5) n"
        )
        conn.execute(
            "INSERT INTO articles (slug, title, description, body, tag_list, author_id) "
            "SELECT 's' || n, 'Dragons ' || n, 'd', 'b', "
            "ARRAY['t' || (n % 3), 'all'], 1 + n % 5 FROM generate_series(1, 40) n"
        )
        conn.execute(
            "INSERT INTO favorites (user_id, article_id) "
            "SELECT u, a FROM generate_series(1, 5) u, generate_series(1, 40) a WHERE (u + a) % 4 = 0"
        )
    command.upgrade(config, REVISION)
    with psycopg.connect(url) as conn:
        assert drift(conn) == []
        totals = conn.execute(
            "SELECT (SELECT sum(articles) FROM article_count_shards), "
            "(SELECT sum(articles) FROM tag_count_shards WHERE tag = 'all'), "
            "(SELECT count(*) FROM articles WHERE search @@ to_tsquery('english', 'dragon'))"
        ).fetchone()
        assert totals == (40, 40, 40)
    command.downgrade(config, before)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
