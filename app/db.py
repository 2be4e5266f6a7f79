"""Database plumbing: declarative base, engine and session factory.

The driver is psycopg 3, chosen in this one place. By default it runs with
`prepare_threshold=None`, so it never creates named server-side prepared
statements: every statement is a single unnamed extended-protocol round trip,
which is exactly what PgBouncer in transaction mode (1.18, no prepared
statement support) can route safely to any server connection. With
DB_PREPARED_STATEMENTS=true (direct connections only) psycopg prepares a
statement on its fifth use, saving PostgreSQL the planning.
"""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, MetaData
from sqlalchemy.exc import DBAPIError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.db_reads import ReadConnection, ReadPool
from app.driver_pool import DriverPool
from app.observability.pool import MeteredQueuePool

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

POOL_RECYCLE_S = 1800  # a connection older than this is closed, not reused

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Opens a pooled connection for public reads, on the driver (app/db_reads.py): the lifespan's
# `ReadPool.connect`, or with replicas `Replicas.connect`; tests lend their own connection.
Connect = Callable[[], AbstractAsyncContextManager[ReadConnection]]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}  # noqa: RUF012


def connect_args(settings: Settings) -> dict[str, Any]:
    """psycopg's options for every connection of the app's, the ORM's and the reads'."""
    return {
        "prepare_threshold": 5 if settings.db_prepared_statements else None,
        "application_name": "conduit",
    }


def make_engine(
    settings: Settings,
    url: str | None = None,
    *,
    pooled: bool = True,
    autocommit: bool = False,
    pool_size: int | None = None,
) -> AsyncEngine:
    """The ORM's pool of the process, of `pool_size` connections (default DB_POOL_SIZE: a
    process without a read pool of its own), docs/OPERATIONS.md "Connection budget".

    `autocommit` (the API's engine): pooled connections stay in autocommit, so a
    single-statement read takes one as it is, with no BEGIN/COMMIT round trips and no switch
    of mode on every checkout and checkin (measured alone, that switch was a third of a read's
    time in SQLAlchemy: bench/README.md). Transactions are opened only by sessions
    (`make_sessionmaker`), which switch their connection to READ COMMITTED for their length.
    """
    options: dict[str, Any] = {
        # A failed statement's error (logged, and in tracebacks) names the statement, never
        # its values: they can be passwords' hashes, emails, bodies.
        "hide_parameters": True,
        "connect_args": connect_args(settings),
    }
    if pooled:
        options |= {
            "pool_size": pool_size or settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": POOL_RECYCLE_S,
            "poolclass": MeteredQueuePool,  # conduit_db_pool_* metrics
        }
    else:
        options["poolclass"] = NullPool
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_async_engine(url or settings.database_url, **options)


def make_read_pool(
    settings: Settings, engine: AsyncEngine, tracer_provider: "TracerProvider | None" = None
) -> ReadPool:
    """The public reads' own pool on `engine`'s database: DB_POOL_SIZE less the ORM's share
    (app/driver_pool.py), the same connection options and pool timeout."""
    connections = DriverPool(
        engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
        size=settings.read_pool_size,
        timeout_s=settings.db_pool_timeout,
        recycle_s=POOL_RECYCLE_S,
        **connect_args(settings),
    )
    return ReadPool(engine, connections, tracer_provider)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions are transactions (READ COMMITTED, PostgreSQL's default), whatever the engine's
    default mode: on an autocommit engine each session's connection is switched for it."""
    transactional = engine.execution_options(isolation_level="READ COMMITTED")
    return async_sessionmaker(transactional, expire_on_commit=False, autoflush=False)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not serve the request (PostgreSQL or PgBouncer down or restarting,
    the pool exhausted): a retry shortly may succeed, so the client gets 503 + Retry-After.
    Any other database error is a bug or a constraint, not an outage."""
    if isinstance(exc, PoolTimeout | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        # The driver found the connection closed or broken (SQLAlchemy invalidated it), or
        # psycopg lost track of the protocol on a connection being torn down: an error of its
        # own, without SQLSTATE ("received 2 results from command 'COMMIT'", seen while
        # PostgreSQL restarts behind PgBouncer).
        return exc.connection_invalidated or (
            isinstance(exc, InternalError) and getattr(exc.orig, "sqlstate", None) is None
        )
    return False
