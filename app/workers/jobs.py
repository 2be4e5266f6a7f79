"""Job functions. Each takes ids, never ORM objects, is safe to run twice, and opens its own
transactions with `session_scope` (commit at the end, then the jobs it deferred are enqueued).

run_import       one chunk per transaction until the import is done (imports/loader.py)
relay_event      outbox event -> one delivery per matching webhook (webhooks/attempts.py)
deliver_webhook  one signed attempt; the next one is scheduled with backoff, or the dead letter
relay            periodic: whatever PostgreSQL says is due but no job is carrying, and attempts
                 whose worker died (counted as failed)
purge            periodic: expired idempotency keys, old relayed events
check_counts     periodic (daily): every list counter against count(*); drift is logged and
                 shown as conduit_counts_drifted, and must be zero (app/counts/drift.py)
"""

import logging
import time
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import httpx
from saq.job import Job
from saq.types import Context
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import queue, transaction
from app.config import Settings
from app.counts import drift
from app.imports import loader
from app.imports import service as imports
from app.models import OutboxEvent, WebhookDelivery
from app.observability import metrics
from app.transaction import AfterCommit
from app.webhooks import attempts, sender, targets

log = logging.getLogger("conduit.worker")

RELAY_BATCH = 500
PURGE_BATCH = 5000
EVENT_RETENTION = timedelta(days=30)
# Grace before the periodic relay takes over work the normal path should have carried.
EVENT_GRACE_S = 2.0
DELIVERY_GRACE_S = 5.0
QUEUED_IMPORT_GRACE_S = 5.0
# An attempt (resolution, connection, answer) ends WEBHOOK_TIMEOUT_S + ATTEMPT_MARGIN_S
# after it starts, inside SAQ's job timeout (app/queue.py: + 10 s); its lease lasts longer
# still, so the relay never counts as lost an attempt that is still running.
ATTEMPT_MARGIN_S = 5.0
LEASE_MARGIN_S = 30.0
# The count check reads every row of articles and favorites in one snapshot; past this,
# PostgreSQL cancels it (the job fails and says so) rather than hold the snapshot longer.
COUNTS_CHECK_TIMEOUT_S = 600.0
# Drifted counters named in the log per check; the gauge has the total.
COUNTS_LOGGED = 20


class Ctx(Context, total=False):
    """What the worker's startup puts in every job's context (app/workers/main.py)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    effects: AfterCommit
    http: httpx.AsyncClient
    targets: targets.Policy


def session_scope(ctx: Ctx) -> AbstractAsyncContextManager[AsyncSession]:
    """One transaction: committed at the end with its after-effects (cache versions, deferred
    jobs: app/transaction.py), rolled back on any error or cancellation."""
    return transaction.begin(ctx["sessions"], ctx["effects"])


async def run_import(ctx: Ctx, *, import_id: int) -> dict[str, int | str]:
    """Import every remaining chunk, one transaction each; heartbeats keep the job alive."""
    job = ctx.get("job")
    try:
        while True:
            async with session_scope(ctx) as session:
                progress = await loader.import_next_batch(session, import_id=import_id)
            await _heartbeat(job, progress)
            if progress.finished:
                return {"state": progress.state, "processed": progress.processed_lines}
    except Exception as exc:
        if job is None or not job.retryable:  # the last attempt: say so on the import
            async with session_scope(ctx) as session:
                await loader.fail(session, import_id=import_id, error=f"{type(exc).__name__}")
        raise


async def relay_event(ctx: Ctx, *, event_id: int) -> int:
    """Fan an outbox event out into deliveries (once, whatever runs it) and enqueue them."""
    async with session_scope(ctx) as session:
        return len(await attempts.fan_out(session, event_id=event_id))


async def deliver_webhook(ctx: Ctx, *, delivery_id: int, attempt: int) -> str:
    """Make attempt number `attempt` of a delivery; no database connection is held while the
    receiver answers (the attempt is leased, then recorded)."""
    settings = ctx["settings"]
    async with session_scope(ctx) as session:
        claimed = await attempts.claim(
            session,
            delivery_id=delivery_id,
            attempt=attempt,
            lease_s=settings.webhook_timeout_s + LEASE_MARGIN_S,
        )
    if claimed is None:
        return "skipped"
    outcome = await sender.send(
        ctx["http"],
        claimed,
        ctx["targets"],
        deadline_s=settings.webhook_timeout_s + ATTEMPT_MARGIN_S,
    )
    async with session_scope(ctx) as session:
        return await attempts.record_attempt(
            session,
            delivery_id=claimed.delivery_id,
            attempt=claimed.attempt,
            outcome=outcome,
            retries=_retries(settings),
        )


def _retries(settings: Settings) -> attempts.Retries:
    return attempts.Retries(
        max_attempts=settings.webhook_max_attempts,
        backoff_base_s=settings.webhook_backoff_base_s,
        backoff_max_s=settings.webhook_backoff_max_s,
    )


async def relay(ctx: Ctx) -> dict[str, int]:
    """Enqueue what PostgreSQL says is due and no job carries: events not fanned out (Redis was
    down at commit), overdue delivery attempts, stalled imports. Enqueueing twice is harmless:
    SAQ drops a job whose key is still queued, and every job re-checks its row."""
    settings = ctx["settings"]
    async with session_scope(ctx) as session:
        events = await attempts.unrelayed_events(
            session, older_than_s=EVENT_GRACE_S, limit=RELAY_BATCH
        )
        for event_id in events:
            queue.defer(session, queue.RELAY_EVENT, key=f"event:{event_id}", event_id=event_id)
        lost = await attempts.record_lost_attempts(
            session, limit=RELAY_BATCH, retries=_retries(settings)
        )
        overdue = await attempts.overdue_deliveries(
            session, older_than_s=DELIVERY_GRACE_S, limit=RELAY_BATCH
        )
        for delivery_id, attempt in overdue:
            attempts.defer_attempt(session, delivery_id, attempt)
        stalled = await loader.stalled(
            session, queued_s=QUEUED_IMPORT_GRACE_S, running_s=2 * settings.job_heartbeat_s
        )
        for import_id in stalled:
            queue.defer(
                session, queue.RUN_IMPORT, key=imports.job_key(import_id), import_id=import_id
            )
    if (saq_queue := ctx.get("queue")) is not None:
        depth = await saq_queue.count("queued")
        metrics.JOB_QUEUE_DEPTH.labels(queue=saq_queue.name).set(depth)
    if events or overdue or stalled or lost:
        log.info(
            "relayed %d events, %d deliveries, %d imports; %d lost attempts counted",
            *(len(events), len(overdue), len(stalled), lost),
        )
    return {
        "events": len(events),
        "deliveries": len(overdue),
        "imports": len(stalled),
        "lost_attempts": lost,
    }


async def purge(ctx: Ctx) -> dict[str, int]:
    """Delete expired idempotency keys and relayed events past retention (with their
    deliveries), in batches so no transaction grows large."""
    keys = await _purge_batches(
        ctx,
        "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
        "WHERE expires_at <= now() LIMIT :batch)",
    )
    pending = select(WebhookDelivery.id).where(
        WebhookDelivery.event_id == OutboxEvent.id, WebhookDelivery.state == "pending"
    )
    old = (
        select(OutboxEvent.id)
        .where(
            OutboxEvent.relayed_at < func.now() - EVENT_RETENTION,
            ~pending.exists(),
        )
        .limit(PURGE_BATCH)
    )
    events = 0
    while True:
        async with session_scope(ctx) as session:
            result = await session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(old)))
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        events += deleted
        if deleted < PURGE_BATCH:
            break
    return {"idempotency_keys": keys, "events": events}


async def check_counts(ctx: Ctx) -> dict[str, int]:
    """Every list counter against count(*), in one snapshot (`python -m app.counts check`'s
    statement, on the worker's pool); drift is never a write in flight, so any is an error."""
    found = await drift.check(ctx["engine"], timeout_s=COUNTS_CHECK_TIMEOUT_S)
    metrics.COUNTS_DRIFTED.set(len(found))
    metrics.COUNTS_CHECKED.set(time.time())
    for item in found[:COUNTS_LOGGED]:
        log.error("count drift: %s", item)
    if found:
        log.error(
            "%d list counters differ from count(*): `python -m app.counts rebuild` repairs them",
            len(found),
        )
    return {"drifted": len(found)}


async def _purge_batches(ctx: Ctx, statement: str) -> int:
    total = 0
    while True:
        async with session_scope(ctx) as session:
            result = await session.execute(text(statement), {"batch": PURGE_BATCH})
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        total += deleted
        if deleted < PURGE_BATCH:
            return total


async def _heartbeat(job: Job | None, progress: loader.Progress) -> None:
    """Touch the job (SAQ's sweep retries a job whose heartbeat stops) and show progress. The
    import's state is in PostgreSQL: a Redis hiccup here is not a reason to stop."""
    if job is None:
        return
    done = progress.processed_lines / progress.total_lines if progress.total_lines else 0.0
    try:
        await job.update(progress=round(done, 4))
    except Exception as exc:
        log.warning("import heartbeat failed: %s", type(exc).__name__)


FUNCTIONS = (run_import, relay_event, deliver_webhook)
