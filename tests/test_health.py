"""/readyz is never shed, so it must stay cheap: one check per second per process."""

import asyncio

from sqlalchemy import event

from app.dependencies import get_engine
from tests.conftest import ROOT


async def test_readyz_checks_the_database_at_most_once_a_second(app, client, settings):
    from app.db import make_engine

    engine = make_engine(settings)
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement),
    )
    app.dependency_overrides[get_engine] = lambda: engine
    try:
        together = await asyncio.gather(*(client.get(ROOT + "/readyz") for _ in range(20)))
        after = [await client.get(ROOT + "/readyz") for _ in range(20)]
        checked = statements.count("SELECT 1")
        await asyncio.sleep(1.1)
        later = await client.get(ROOT + "/readyz")
    finally:
        await engine.dispose()
    assert {r.status_code for r in [*together, *after, later]} == {200}
    assert checked == 1
    assert statements.count("SELECT 1") == 2  # the result is only reused for a second
