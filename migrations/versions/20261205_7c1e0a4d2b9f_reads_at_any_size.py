"""reads at any size: sharded list counters kept by triggers, full-text search, slug history

Revision ID: 7c1e0a4d2b9f
Revises: afaefb19b1ce
Create Date: 2026-12-05 22:45:00.000000

On a large `articles` table the generated `search` column rewrites the table and the GIN
indexes take a while: run it in a maintenance window (docs/DATA.md). The counters are
created and back-filled while `articles` and `favorites` are locked against writes, so no
write can slip between the back-fill and the triggers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c1e0a4d2b9f"
down_revision: str | None = "afaefb19b1ce"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Weights: title A, description B, body C (app/models/article.py holds the same text).
SEARCH_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, title), 'A') || "
    "setweight(to_tsvector('english'::regconfig, description), 'B') || "
    "setweight(to_tsvector('english'::regconfig, body), 'C')"
)

# One shard per transaction and counter (its transaction id modulo 16): its statements add
# to the same rows, and concurrent writers spread over 16. Rows are locked in one order in
# every transaction (users by id, then the total, then tags by name), so counter rows alone
# cannot deadlock two writers; what remains (two deletions whose authors favorited each
# other's articles, on the same shard) is retried by the services (app/retry.py).
COUNTING = """
CREATE TYPE article_count_delta AS (author_id bigint, tag_list text[], n integer);

CREATE FUNCTION count_articles(deltas article_count_delta[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (pg_current_xact_id()::text::bigint % 16)::smallint;
BEGIN
    INSERT INTO user_count_shards AS c (user_id, shard, articles)
    SELECT author_id, s, sum(n) FROM unnest(deltas)
    GROUP BY author_id HAVING sum(n) <> 0 ORDER BY author_id
    ON CONFLICT (user_id, shard) DO UPDATE SET articles = c.articles + excluded.articles;

    INSERT INTO article_count_shards AS c (shard, articles)
    SELECT s, sum(n) FROM unnest(deltas) HAVING sum(n) <> 0
    ON CONFLICT (shard) DO UPDATE SET articles = c.articles + excluded.articles;

    INSERT INTO tag_count_shards AS c (tag, shard, articles)
    SELECT t.tag, s, sum(d.n)
    FROM unnest(deltas) AS d, LATERAL (SELECT DISTINCT unnest(d.tag_list)) AS t(tag)
    GROUP BY t.tag HAVING sum(d.n) <> 0 ORDER BY t.tag
    ON CONFLICT (tag, shard) DO UPDATE SET articles = c.articles + excluded.articles;
END $$;

CREATE FUNCTION articles_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM count_articles(ARRAY(
            SELECT (author_id, tag_list, 1)::article_count_delta FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM count_articles(ARRAY(
            SELECT (author_id, tag_list, -1)::article_count_delta FROM old_rows));
    ELSE  -- an author or tags that changed: what nets to zero is skipped
        PERFORM count_articles(ARRAY(
            SELECT (author_id, tag_list, 1)::article_count_delta FROM new_rows
            UNION ALL
            SELECT (author_id, tag_list, -1)::article_count_delta FROM old_rows));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION favorites_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s smallint := (pg_current_xact_id()::text::bigint % 16)::smallint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO user_count_shards AS c (user_id, shard, favorites)
        SELECT user_id, s, count(*) FROM new_rows GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id, shard) DO UPDATE SET favorites = c.favorites + excluded.favorites;
    ELSE
        INSERT INTO user_count_shards AS c (user_id, shard, favorites)
        SELECT user_id, s, -count(*) FROM old_rows GROUP BY user_id ORDER BY user_id
        ON CONFLICT (user_id, shard) DO UPDATE SET favorites = c.favorites + excluded.favorites;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER articles_counted_insert AFTER INSERT ON articles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION articles_counted();
CREATE TRIGGER articles_counted_delete AFTER DELETE ON articles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION articles_counted();
CREATE TRIGGER articles_counted_update AFTER UPDATE ON articles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION articles_counted();
CREATE TRIGGER favorites_counted_insert AFTER INSERT ON favorites
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION favorites_counted();
CREATE TRIGGER favorites_counted_delete AFTER DELETE ON favorites
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION favorites_counted();
"""

BACKFILL = """
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


def upgrade() -> None:
    op.create_table(
        "article_count_shards",
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("articles", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard", name=op.f("pk_article_count_shards")),
    )
    op.create_table(
        "tag_count_shards",
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tag", "shard", name=op.f("pk_tag_count_shards")),
    )
    op.create_table(
        "user_count_shards",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("articles", sa.Integer(), server_default="0", nullable=False),
        sa.Column("favorites", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("user_id", "shard", name=op.f("pk_user_count_shards")),
    )
    op.execute("LOCK TABLE articles, favorites IN SHARE ROW EXCLUSIVE MODE")
    op.execute(COUNTING)
    op.execute(BACKFILL)

    op.add_column(
        "articles",
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(SEARCH_VECTOR, persisted=True),
            nullable=True,
        ),
    )
    op.create_index("ix_articles_search", "articles", ["search"], postgresql_using="gin")
    op.create_index(
        "ix_articles_title_search",
        "articles",
        [sa.text("to_tsvector('english'::regconfig, title)")],
        postgresql_using="gin",
    )

    op.create_table(
        "article_slugs",
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("article_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["articles.id"],
            name=op.f("fk_article_slugs_article_id_articles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_article_slugs")),
    )
    op.create_index(op.f("ix_article_slugs_article_id"), "article_slugs", ["article_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_article_slugs_article_id"), table_name="article_slugs")
    op.drop_table("article_slugs")
    op.drop_index("ix_articles_title_search", table_name="articles")
    op.drop_index("ix_articles_search", table_name="articles")
    op.drop_column("articles", "search")
    for trigger, table in (
        ("favorites_counted_delete", "favorites"),
        ("favorites_counted_insert", "favorites"),
        ("articles_counted_update", "articles"),
        ("articles_counted_delete", "articles"),
        ("articles_counted_insert", "articles"),
    ):
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    op.execute("DROP FUNCTION favorites_counted()")
    op.execute("DROP FUNCTION articles_counted()")
    op.execute("DROP FUNCTION count_articles(article_count_delta[])")
    op.execute("DROP TYPE article_count_delta")
    op.drop_table("user_count_shards")
    op.drop_table("tag_count_shards")
    op.drop_table("article_count_shards")
