"""A real PostgreSQL for the test run: TEST_DATABASE_URL, or the embedded wheel under .data/."""

import os
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from app.config import async_url
from app.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent


def server_url() -> str:
    """URL of a maintenance database on the test server (plain libpq form)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url
    from app.dev.embedded import start_postgres

    return start_postgres(ROOT / ".data" / "test-postgres", "postgres")


def fresh_database(name: str) -> str:
    """Drop and re-create database `name` on the test server, migrate it; return its async URL.

    The name gets this process's id: test runs side by side (two checkouts, a developer's
    `make test-fast` beside CI) share the embedded server and must not drop each other's."""
    name = f"{name}_{os.getpid()}"
    admin = server_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = async_url(_with_database(admin, name))
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    """Drop what `fresh_database` made (connections still open are closed by force)."""
    name = make_url(url).database
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)
