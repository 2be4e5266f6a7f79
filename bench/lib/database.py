"""What the benchmarks read from the database they load."""


def plain_url(url: str) -> str:
    """libpq wants `postgresql://`; accept the app's SQLAlchemy spelling too."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url.removeprefix(prefix)
    return url
