"""The SQL statements an engine runs inside a block, whichever path ran them: the ORM's
(SQLAlchemy's `before_cursor_execute`) and public reads on the driver (app/db_reads.py)."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db_reads


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def orm(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    def driver(statement: str, _params: Mapping[str, object]) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", orm)
    db_reads.listen(engine, driver)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", orm)
        db_reads.remove(engine, driver)
