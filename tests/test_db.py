"""Which database errors are an outage (503 + Retry-After) and which are bugs (500)."""

import httpx
import psycopg
import pytest
from psycopg import errors
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db import is_unavailable
from app.main import create_app
from tests.conftest import ROOT, make_state, serve_with_state

# psycopg's own error on a connection being torn down behind PgBouncer (no SQLSTATE)
PROTOCOL_LOST = InternalError("COMMIT", None, psycopg.InternalError("received 2 results"))
SERVER_BUG = InternalError("SELECT 1", None, errors.lookup("XX000")("cache lookup failed"))
DUPLICATE = IntegrityError("INSERT", None, errors.UniqueViolation("duplicate key"))


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (PoolTimeout("QueuePool limit reached"), True),
        (OperationalError("SELECT 1", None, psycopg.OperationalError("server closed")), True),
        (PROTOCOL_LOST, True),
        (
            DBAPIError("SELECT 1", None, psycopg.DatabaseError("x"), connection_invalidated=True),
            True,
        ),
        (SERVER_BUG, False),
        (DUPLICATE, False),
        (ValueError("not a database error"), False),
    ],
)
def test_is_unavailable(exc: BaseException, unavailable: bool) -> None:
    assert is_unavailable(exc) is unavailable


@pytest.mark.parametrize(("exc", "status"), [(PROTOCOL_LOST, 503), (SERVER_BUG, 500)])
async def test_an_outage_is_a_fast_503_a_bug_stays_a_500(
    settings: Settings, engine: AsyncEngine, exc: Exception, status: int
) -> None:
    app = create_app(settings)

    async def failing() -> None:
        raise exc

    app.add_api_route("/api/test/failing", failing)
    state = make_state(settings, engine)
    transport = httpx.ASGITransport(app=serve_with_state(app, state), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ROOT) as client:
        response = await client.get("/api/test/failing")
    assert response.status_code == status
    assert response.json()["errors"]["body"]  # the RealWorld shape either way
    assert ("Retry-After" in response.headers) is (status == 503)


async def test_a_failed_statement_does_not_show_its_parameters(settings: Settings) -> None:
    """Errors are logged and traced: the statement may show, its values (emails, hashes,
    bodies) may not. (PostgreSQL's own message can still quote a value it could not take,
    e.g. `invalid input syntax`; this statement fails without quoting it.)"""
    from sqlalchemy import text

    from app.db import make_engine

    secret = "hunter2-never-logged@example.com"
    engine = make_engine(settings)
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": secret})
    finally:
        await engine.dispose()
    assert "1 / 0" in str(failed.value)
    assert secret not in str(failed.value)
    assert secret not in repr(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)
