"""The worker's periodic count check (`check_counts`, docs/DATA.md "Periodic check"): exact
counters read as no drift, drift is logged and shown as a metric, PostgreSQL bounds the
check's time, and the worker schedules it as configured."""

import logging

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.counts import drift
from app.workers import jobs
from app.workers.main import cron_jobs

QUERY_CANCELED = "57014"


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


@pytest.mark.usefixtures("committing_state")  # empties the tables afterwards
async def test_check_counts_finds_no_drift_then_reports_drift(ctx, engine, caplog):
    async with engine.begin() as conn:
        author = await conn.scalar(
            text(
                "INSERT INTO users (username, email, password_hash) "
                "VALUES ('counted', 'counted@x.io', 'x') RETURNING id"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO articles (slug, title, description, body, author_id, tag_list) "
                "SELECT 'a' || n, 't', 'd', 'b', :author, ARRAY['t'] FROM generate_series(1, 3) n"
            ),
            {"author": author},
        )
    assert await jobs.check_counts(ctx) == {"drifted": 0}
    assert _gauge("conduit_counts_drifted") == 0
    checked = _gauge("conduit_counts_checked_timestamp_seconds")
    assert checked is not None

    async with engine.begin() as conn:  # what a disabled trigger would leave behind
        await conn.execute(text("ALTER TABLE articles DISABLE TRIGGER articles_counted_insert"))
        await conn.execute(
            text(
                "INSERT INTO articles (slug, title, description, body, author_id, tag_list) "
                "VALUES ('uncounted', 't', 'd', 'b', :author, ARRAY['t'])"
            ),
            {"author": author},
        )
        await conn.execute(text("ALTER TABLE articles ENABLE TRIGGER articles_counted_insert"))
    with caplog.at_level(logging.ERROR, logger="conduit.worker"):
        assert await jobs.check_counts(ctx) == {"drifted": 3}  # all articles, the tag, the author
    assert _gauge("conduit_counts_drifted") == 3
    assert (_gauge("conduit_counts_checked_timestamp_seconds") or 0) >= checked
    logged = [record.getMessage() for record in caplog.records]
    assert "count drift: articles: count(*) 4, counter 3 (-1)" in logged
    assert "count drift: tag t: count(*) 4, counter 3 (-1)" in logged
    assert any(line.startswith("3 list counters differ") for line in logged)


async def test_postgresql_cancels_a_check_that_runs_too_long(engine, monkeypatch):
    monkeypatch.setattr(drift, "DRIFT", "SELECT 'articles', '', 0, 0 FROM pg_sleep(5)")
    with pytest.raises(DBAPIError) as failure:
        await drift.check(engine, timeout_s=0.1)
    assert getattr(failure.value.orig, "sqlstate", None) == QUERY_CANCELED


def test_the_worker_runs_the_check_on_its_cron_line_or_not_at_all(settings: Settings) -> None:
    scheduled = {job.function.__name__: job for job in cron_jobs(settings)}
    check = scheduled["check_counts"]
    assert check.cron == Settings.model_fields["counts_check_cron"].default == "17 4 * * *"
    assert check.retries == 1
    assert check.timeout is not None
    assert check.timeout > jobs.COUNTS_CHECK_TIMEOUT_S
    off = settings.model_copy(update={"counts_check_cron": ""})
    assert "check_counts" not in {job.function.__name__ for job in cron_jobs(off)}
