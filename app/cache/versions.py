"""The names of the cache versions: what a cached document is built from, and what a write
bumps. Readers and writers take them from here, so the two sides cannot drift apart."""

ARTICLES = "articles"  # which articles exist (every list, the feed)
TAGS = "tags"  # the set of tags in use
AUTHORS = "authors"  # any profile: they are embedded in articles and comments


def article(slug: str) -> str:
    """What one article shows (title, body, favoritesCount); an item of list pages."""
    return f"article:{slug}"


def comments(slug: str) -> str:
    return f"comments:{slug}"


def favorites(username: str) -> str:
    """The list of articles a user favorited."""
    return f"favorites:{username}"


def viewer(user_id: int) -> str:
    """Whom a user follows and what they favorite: their `following`/`favorited` flags."""
    return f"viewer:{user_id}"
