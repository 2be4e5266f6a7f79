"""`python -m app.counts check`: every list counter against `count(*)`; exit status 1 and
one line per counter on drift. `python -m app.counts rebuild`: recompute them all (writes
to articles and favorites wait meanwhile). The database is DIRECT_DATABASE_URL or
DATABASE_URL, as for migrations, unless --database-url is given."""

import argparse
import sys
from collections.abc import Sequence

import psycopg

from app.config import Settings
from app.counts.drift import drift, rebuild


def plain(url: str) -> str:
    """libpq's spelling of the app's SQLAlchemy URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.counts", description=__doc__)
    parser.add_argument("command", choices=("check", "rebuild"))
    parser.add_argument("--database-url", help="default: the migration URL of the settings")
    args = parser.parse_args(argv)
    url = plain(args.database_url or Settings().migration_url)
    with psycopg.connect(url) as conn:
        if args.command == "rebuild":
            with conn.transaction(), conn.cursor() as cursor:
                rebuild(cursor)
            sys.stdout.write("counters rebuilt\n")
        found = drift(conn)
    for item in found:
        sys.stdout.write(f"{item}\n")
    sys.stdout.write(
        f"{len(found)} counters drifted\n" if found else "every counter equals count(*)\n"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
