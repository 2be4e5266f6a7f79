"""Statement parts for full-text search (`GET /articles?q=`), with bounded cost at any size.

The words are matched against `articles.search` (title A, description B, body C; GIN
index). Ranking is by tier: matches in the title first (tier 0: the A part, served by its
own small GIN index on the title's vector), then the other matches (tier 1), newest first
within each tier. Unlike `ORDER BY ts_rank(...)`, which must rank every match before it
can return the first, each tier is a list in the (created_at, id) order, so a page reads
either the newest rows until it has enough (common words) or the few matching rows by
index (rare words), and keyset cursors work in search as in any list.

The count of a search stops at COUNT_LIMIT: above it `articlesCount` is COUNT_LIMIT and
`articlesCountExact` false (as search engines report "1,000+"), because counting every
match of a common word costs as much as the matches.
"""

from sqlalchemy import (
    ColumnElement,
    Subquery,
    Text,
    bindparam,
    func,
    literal,
    literal_column,
    not_,
    select,
)

from app.models import Article

COUNT_LIMIT = 1_000

_ENGLISH: ColumnElement[str] = literal_column("'english'::regconfig")


def _query() -> ColumnElement[object]:
    # websearch_to_tsquery accepts any text (quotes, OR, -word) and never raises.
    return func.websearch_to_tsquery(_ENGLISH, bindparam("q", type_=Text))


def matches() -> ColumnElement[bool]:
    """The article matches the words anywhere (GIN on `search`)."""
    return Article.search.bool_op("@@")(_query())


def in_title() -> ColumnElement[bool]:
    """The words match the title: the same expression as ix_articles_title_search."""
    return func.to_tsvector(_ENGLISH, Article.title).bool_op("@@")(_query())


def tier_clauses(tier: int) -> list[ColumnElement[bool]]:
    """What puts an article in `tier`: 0 title matches, 1 every other match."""
    return [in_title()] if tier == 0 else [matches(), not_(in_title())]


def counted(*clauses: ColumnElement[bool]) -> Subquery:
    """One row, `n`: the matches, counted up to COUNT_LIMIT + 1 (then the count stops)."""
    found = (
        select(literal(1)).select_from(Article).where(matches(), *clauses).limit(COUNT_LIMIT + 1)
    ).subquery("found")
    return select(func.count().label("n")).select_from(found).subquery("counted")
