"""The names of the cache versions: what a cached document is built from, and what a write
bumps. Readers and writers take them from here, so the two sides cannot drift apart."""

ARTICLES = "articles"  # which articles exist: the front page, searches, favorites pages
SEARCHES = "searches"  # which articles a search matches: an edit can make one match or not
LISTS = "lists"  # every list page, whatever it is narrowed by: bulk inserts (imports)
TAGS = "tags"  # the set of tags in use
AUTHORS = "authors"  # any profile: they are embedded in articles and comments
# An article's slug changed or was freed (new title, deletion): viewers' sets name slugs.
SLUGS = "slugs"


def article(slug: str) -> str:
    """What one article shows (title, body, favoritesCount); an item of list pages."""
    return f"article:{slug}"


def tagged(tag: str) -> str:
    """Which articles carry `tag`: its list pages (tags never change once published)."""
    return f"articles:tag:{tag}"


def authored(username: str) -> str:
    """Which articles `username` wrote: their list pages (a new name bumps AUTHORS)."""
    return f"articles:author:{username}"


def comments(slug: str) -> str:
    return f"comments:{slug}"


def favorites(username: str) -> str:
    """The list of articles a user favorited."""
    return f"favorites:{username}"


def viewer(user_id: int) -> str:
    """Whom a user follows and what they favorite: their `following`/`favorited` flags."""
    return f"viewer:{user_id}"
