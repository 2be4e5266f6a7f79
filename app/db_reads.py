"""Public reads on the driver: a statement compiled once, one round trip on a pooled psycopg
connection, no SQLAlchemy execution layer in between (docs/ARCHITECTURE.md, "Read path").

- `compiled`: a statement shape as SQLAlchemy would send it through psycopg (the text with
  `%(name)s` parameters, type casts rendered, the values fixed at build time, the bind
  processors), once per statement object; statements are built once per shape by their
  builders (app/articles/queries.py and the like), so this is a cache by shape.
- `ReadPool.connect`: a connection of the reads' own pool (app/driver_pool.py: psycopg
  connections in autocommit, the process's DB_POOL_SIZE shared with the ORM's pool, both
  counted in the `conduit_db_pool_*` metrics), used through psycopg directly.
- `ReadConnection`: runs the statements and keeps what SQLAlchemy's execution did for
  reads: errors wrapped in SQLAlchemy's exception classes (so `is_unavailable`, the 503
  handler and the replicas' fallback see what they always saw), a lost connection
  invalidated (with its pool's older connections, as SQLAlchemy does) instead of returned,
  a span per statement when tracing is on, and `listen` for whoever counts statements.
  Beyond it: a read on a connection found lost runs again, once, on a fresh one.

Writes, and reads inside a write's transaction, stay on the ORM (app/transaction.py).
The reads' connections are made with the ORM's connection options (`connect_args`, app/db.py):
psycopg prepares statements only with DB_PREPARED_STATEMENTS, never behind PgBouncer.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, cast
from weakref import WeakKeyDictionary

import psycopg
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, InvalidRequestError, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import is_exit_exception

from app.driver_pool import Connection as Driver
from app.driver_pool import DriverPool

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

Row = tuple[Any, ...]
# (SQL as sent, its parameters): what a listener hears before each statement.
Listener = Callable[[str, Mapping[str, object]], None]

_REQUIRED: Final = object()


@dataclass(frozen=True, slots=True)
class CompiledRead:
    """One statement shape, ready for psycopg."""

    sql: str
    # (name in the SQL, name the caller passes, value when the caller passes none)
    binds: tuple[tuple[str, str, object], ...]
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]  # e.g. ARRAY: any sequence → list

    def values(self, params: Mapping[str, object] | None) -> dict[str, object]:
        """The parameters psycopg gets, as SQLAlchemy's `construct_params` makes them."""
        given = params or {}
        values: dict[str, object] = {}
        for name, key, default in self.binds:
            value = given.get(key, default)
            if value is _REQUIRED:
                raise InvalidRequestError(f"A value is required for bind parameter {key!r}")
            values[name] = value
        for name, process in self.processors:
            values[name] = process(values[name])
        return values


# Bounded: a statement built anew on every call (a mistake: build it once per shape) costs a
# compilation each time, but cannot grow this without end.
@lru_cache(maxsize=1024)
def compiled(statement: ClauseElement, dialect: Dialect) -> CompiledRead:
    """`statement` as SQLAlchemy compiles it for `dialect` (the engine's own, so the text is
    the one its execution would send)."""
    done = cast(SQLCompiler, statement.compile(dialect=dialect))
    if done.positional or done.post_compile_params or done.literal_execute_params:
        # Expanding IN lists and literal-execute values are rendered per execution.
        raise ValueError("a statement rendered per execution cannot be compiled once")
    escaped = done.escaped_bind_names
    binds = []
    for bind, name in done.bind_names.items():
        if bind.callable is not None:
            raise ValueError(f"bind parameter {bind.key!r} is computed per execution")
        default = _REQUIRED if bind.required else bind.value
        binds.append((escaped.get(name, name), bind.key, default))
    processors = [(escaped.get(name, name), process) for name, process in _processors(done)]
    return CompiledRead(str(done), tuple(binds), tuple(processors))


def _processors(done: SQLCompiler) -> list[tuple[str, Callable[[Any], Any]]]:
    # SQLAlchemy's own per-bind processors (a private map of the compiled statement: the
    # same one its execution context applies).
    found: Mapping[str, Any] = done._bind_processors
    return [(name, process) for name, process in found.items() if callable(process)]


# Per engine, like SQLAlchemy's own event registry (an engine that is gone takes its list).
_listeners: "WeakKeyDictionary[Engine, list[Listener]]" = WeakKeyDictionary()
_everywhere: list[Listener] = []


def listen(engine: AsyncEngine | None, listener: Listener) -> None:
    """Hear every statement a thin read sends on `engine` (None: on any engine), the way
    SQLAlchemy's `before_cursor_execute` hears the ORM's: tests count statements with it."""
    _listeners_of(engine).append(listener)


def remove(engine: AsyncEngine | None, listener: Listener) -> None:
    _listeners_of(engine).remove(listener)


def _listeners_of(engine: AsyncEngine | None) -> list[Listener]:
    if engine is None:
        return _everywhere
    return _listeners.setdefault(engine.sync_engine, [])


class ReadPool:
    """Thin reads on one database (the primary, or a replica): its own connections
    (app/driver_pool.py; None: only on connections borrowed from the ORM, `borrowed`), and
    `engine`, the ORM's engine on the same database, whose dialect compiles the statements and
    in whose name listeners hear them (`listen`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        connections: DriverPool | None,
        tracer_provider: "TracerProvider | None" = None,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.connections = connections
        # The same lists `listen` appends to: one truthiness test per statement.
        self.listeners = _listeners_of(engine)
        self.tracer: Tracer | None = None
        self.span_attributes: dict[str, str | int] = {}
        if tracer_provider is not None:
            self.tracer = tracer_provider.get_tracer(__name__)
            self.span_attributes = _span_attributes(engine)

    def connect(self) -> "Checkout":
        """`async with pool.connect() as db:` a pooled connection, back in the pool after."""
        return Checkout(self)

    async def checkout(self) -> Driver:
        if self.connections is None:
            raise InvalidRequestError("this read pool only reads on borrowed connections")
        try:
            return await self.connections.get()
        except psycopg.Error as exc:
            # What `Engine.connect` raises for a connection it cannot make (PostgreSQL or
            # PgBouncer down): an OperationalError, i.e. a 503. A pool timeout passes as is.
            raise _wrapped(exc, None, None, self.dialect, invalidated=False) from exc

    async def close(self) -> None:
        if self.connections is not None:
            await self.connections.close()


class Releasing:
    """The exit of a checkout's context manager: the connection it handed out goes back."""

    __slots__ = ("_connection",)

    def __init__(self) -> None:
        self._connection: ReadConnection | None = None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None:
            await self._connection.release()


class Checkout(Releasing):
    """The async context manager of one checkout (a class, not a generator: it runs on
    every read)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: ReadPool) -> None:
        super().__init__()
        self._pool = pool

    async def __aenter__(self) -> "ReadConnection":
        self._connection = ReadConnection(self._pool, await self._pool.checkout())
        return self._connection


class ReadConnection:
    """A pooled driver connection for reads: `scalar`, `first`, `one`, `all`."""

    __slots__ = ("_driver", "pool")

    def __init__(self, pool: ReadPool, driver: Driver):
        self.pool = pool  # without connections of its own: `driver` is borrowed, the lender's
        self._driver: Driver | None = driver

    @property
    def engine(self) -> AsyncEngine:
        return self.pool.engine

    async def scalar(
        self, statement: ClauseElement, params: Mapping[str, object] | None = None
    ) -> Any:
        """The first column of the first row; None without rows."""
        rows = await self.all(statement, params)
        return rows[0][0] if rows else None

    async def first(
        self, statement: ClauseElement, params: Mapping[str, object] | None = None
    ) -> Row | None:
        rows = await self.all(statement, params)
        return rows[0] if rows else None

    async def one(
        self, statement: ClauseElement, params: Mapping[str, object] | None = None
    ) -> Row:
        """The first row of a statement that always returns one (an aggregate)."""
        rows = await self.all(statement, params)
        if not rows:
            raise NoResultFound("No row was found when one was required")
        return rows[0]

    async def all(
        self, statement: ClauseElement, params: Mapping[str, object] | None = None
    ) -> list[Row]:
        pool = self.pool
        done = compiled(statement, pool.dialect)
        values = done.values(params)
        for listener in pool.listeners:
            listener(done.sql, values)
        for listener in _everywhere:
            listener(done.sql, values)
        if pool.tracer is None:
            return await self._run(done.sql, values)
        return await self._traced(pool.tracer, done.sql, values)

    async def _traced(self, tracer: "Tracer", sql: str, values: dict[str, object]) -> list[Row]:
        from opentelemetry.trace import SpanKind

        # Named and attributed as the SQLAlchemy instrumentation names the ORM's statements,
        # so a trace reads the same whichever path a statement took.
        operation = sql.split(None, 1)[0]
        attributes = self.pool.span_attributes | {
            "db.statement": sql,
            "db.system": "postgresql",
            "db.operation": operation,
        }
        with tracer.start_as_current_span(
            operation, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ):
            return await self._run(sql, values)

    async def _run(self, sql: str, values: dict[str, object]) -> list[Row]:
        # A read runs again, once, on a fresh connection when the driver found its own closed
        # or broken (`retries_lost`): the usual cause is a connection that died while idle
        # (PostgreSQL or PgBouncer restarted since it was last used), and a read has no
        # effect to repeat.
        retried = False
        while True:
            driver = self._driver
            if driver is None:
                raise InvalidRequestError("this read connection is closed or was invalidated")
            try:
                cursor = await driver.execute(sql, values)
                return await cursor.fetchall()
            except psycopg.Error as exc:
                # SQLAlchemy's rule: a connection the driver found closed or broken is a
                # disconnect, and the pool's other connections as old as it are suspect too.
                lost = driver.closed or driver.broken
                if not lost:
                    raise _wrapped(exc, sql, values, self.pool.dialect, invalidated=False) from exc
                await self._invalidate(whole_pool=True)
                if retried or not self.retries_lost():
                    raise _wrapped(exc, sql, values, self.pool.dialect, invalidated=True) from exc
            except BaseException as exc:
                if is_exit_exception(exc):
                    # Cancelled (deadline, client gone) mid-statement: psycopg has asked the
                    # server to cancel, but the connection may be left mid-protocol;
                    # SQLAlchemy discards it, and so do we.
                    await self._invalidate(whole_pool=False)
                raise
            retried = True
            self._driver = await self.pool.checkout()  # cannot connect: a 503 as any other

    def retries_lost(self) -> bool:
        """Whether a statement on a lost connection runs again on a fresh one of the pool
        (not on a borrowed connection: its lender's)."""
        return self.pool.connections is not None

    async def _invalidate(self, *, whole_pool: bool) -> None:
        driver, self._driver = self._driver, None
        connections = self.pool.connections
        if driver is None or connections is None:
            return
        await connections.put(driver, discard=True)
        if whole_pool:
            await connections.discard_idle()

    async def release(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None and self.pool.connections is not None:
            await self.pool.connections.put(driver)

    async def move_to(self, pool: ReadPool) -> None:
        """Give this connection back (unless it was lost) and go on with one from `pool`."""
        await self.release()
        self.pool = pool
        self._driver = await pool.checkout()


class _Borrowed:
    __slots__ = ("_connection",)

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def __aenter__(self) -> ReadConnection:
        fairy = await self._connection.get_raw_connection()
        driver = cast(Driver, fairy.driver_connection)
        return ReadConnection(ReadPool(self._connection.engine, None), driver)

    async def __aexit__(self, *_: object) -> None:
        return None


def borrowed(connection: AsyncConnection) -> _Borrowed:
    """Reads on a connection someone else holds (a test's, inside its transaction)."""
    return _Borrowed(connection)


def _wrapped(
    exc: psycopg.Error,
    sql: str | None,
    values: Mapping[str, object] | None,
    dialect: Dialect,
    *,
    invalidated: bool,
) -> DBAPIError:
    error = DBAPIError.instance(
        sql,
        values,
        exc,
        psycopg.Error,
        hide_parameters=True,  # as make_engine: never the values, in logs or tracebacks
        connection_invalidated=invalidated,
        dialect=dialect,
    )
    return cast(DBAPIError, error)  # a driver's error is always wrapped as a DBAPIError


def _span_attributes(engine: AsyncEngine) -> dict[str, str | int]:
    """The connection attributes the SQLAlchemy instrumentation reads from the engine's URL."""
    url = engine.url
    attributes: dict[str, str | int] = {}
    if url.host:
        attributes["net.peer.name"] = url.host
    if url.port:
        attributes["net.peer.port"] = url.port
    if url.database:
        attributes["db.name"] = url.database
    if url.username:
        attributes["db.user"] = url.username
    return attributes
