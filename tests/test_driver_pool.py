"""The public reads' own connections (app/driver_pool.py), on the real PostgreSQL: at most
`size` lent, waiters served in turn, a timeout that is the ORM pool's, and only idle, healthy
connections lent again."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.config import Settings
from app.db import is_unavailable
from app.driver_pool import Connection, DriverPool


@pytest.fixture
def conninfo(settings: Settings) -> str:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def pool(conninfo: str) -> AsyncIterator[DriverPool]:
    pool = DriverPool(conninfo, size=1, timeout_s=2.0)
    yield pool
    await pool.close()


async def _waiting(pool: DriverPool) -> "asyncio.Task[Connection]":
    task = asyncio.create_task(pool.get())
    await asyncio.sleep(0.05)
    assert not task.done()  # the only connection is lent: it waits
    return task


async def test_at_most_size_connections_and_a_waiter_gets_the_one_returned(
    pool: DriverPool,
) -> None:
    first = await pool.get()
    waiter = await _waiting(pool)
    await pool.put(first)
    assert await waiter is first
    assert pool.checkedout() == 1
    await pool.put(first)
    assert pool.checkedout() == 0
    assert await pool.get() is first  # kept, not made anew
    await pool.put(first)


async def test_a_wait_past_the_timeout_is_the_orm_pools_timeout(conninfo: str) -> None:
    pool = DriverPool(conninfo, size=1, timeout_s=0.2)
    held = await pool.get()
    try:
        with pytest.raises(PoolTimeout) as raised:
            await pool.get()
        assert is_unavailable(raised.value)  # a 503 with Retry-After, as the ORM's
        assert pool.checkedout() == 1
    finally:
        await pool.put(held)
        await pool.close()


async def test_a_connection_handed_to_a_checkout_that_gave_up_goes_to_the_next(
    pool: DriverPool,
) -> None:
    first = await pool.get()
    waiter = await _waiting(pool)
    await pool.put(first)  # handed to the waiter, which is cancelled before it runs
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.checkedout() == 0
    assert await asyncio.wait_for(pool.get(), 0.5) is first
    await pool.put(first)


async def test_a_connection_left_in_a_transaction_is_closed_not_lent_again(
    pool: DriverPool,
) -> None:
    first = await pool.get()
    await first.execute("BEGIN")
    await pool.put(first)
    assert first.closed
    second = await pool.get()
    assert second is not first
    assert not second.closed
    await pool.put(second)


async def test_a_discarded_connections_place_goes_to_a_waiter(pool: DriverPool) -> None:
    first = await pool.get()
    waiter = await _waiting(pool)
    await pool.put(first, discard=True)
    second = await asyncio.wait_for(waiter, 2.0)
    assert first.closed
    assert second is not first
    assert pool.checkedout() == 1  # the place changed hands: never two at once
    await pool.put(second)


async def test_an_old_connection_is_closed_when_it_comes_back(conninfo: str) -> None:
    pool = DriverPool(conninfo, size=1, timeout_s=1.0, recycle_s=0.0)
    first = await pool.get()
    await pool.put(first)
    assert first.closed
    assert pool.checkedout() == 0
    await pool.close()


async def test_a_connection_that_died_while_idle_is_not_lent(pool: DriverPool) -> None:
    first = await pool.get()
    await pool.put(first)
    first.pgconn.finish()  # as a restarted PgBouncer leaves it: closed under the pool
    second = await pool.get()
    assert second is not first
    await pool.put(second)
