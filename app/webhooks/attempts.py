"""Delivery attempts, the worker's side: fan an event out into deliveries, lease one attempt,
record its outcome with the next attempt's time, and find what the queue lost.

Every delivery moves until it is delivered or dead: an attempt that raised is a failed
attempt (sender.send), an attempt whose worker died is counted once its lease runs out
(`record_lost_attempts`), and a relayed delivery goes to the back of the relay's line
(`overdue_deliveries`), so rows that keep failing cannot fill every batch."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import queue
from app.models import OutboxEvent, WebhookDelivery

LOST = "attempt interrupted: its worker stopped before recording an outcome"


@dataclass(frozen=True, slots=True)
class Claimed:
    """One attempt of one delivery, leased to the worker that sends it."""

    delivery_id: int
    attempt: int  # attempts made before this one
    url: str
    secret: str
    event_id: int
    event_type: str
    payload: dict[str, Any]
    request_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Retries:
    """How many attempts, and how far apart (WEBHOOK_MAX_ATTEMPTS, WEBHOOK_BACKOFF_*)."""

    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float


async def fan_out(session: AsyncSession, *, event_id: int) -> list[int]:
    """One delivery per webhook of the event's owner that wants its type; the event is marked
    relayed in the same transaction, so it fans out once. Returns the new deliveries' ids."""
    locked = await session.scalar(
        text(
            "SELECT id FROM outbox_events WHERE id = :id AND relayed_at IS NULL "
            "FOR UPDATE SKIP LOCKED"
        ),
        {"id": event_id},
    )
    if locked is None:  # relayed already, being relayed, or rolled back
        return []
    created = await session.scalars(
        text(
            "INSERT INTO webhook_deliveries (webhook_id, event_id) "
            "SELECT w.id, e.id FROM outbox_events e "
            "JOIN webhooks w ON w.user_id = e.owner_id AND e.type = ANY(w.events) "
            "WHERE e.id = :id ON CONFLICT DO NOTHING RETURNING id"
        ),
        {"id": event_id},
    )
    ids = list(created)
    await session.execute(
        update(OutboxEvent).where(OutboxEvent.id == event_id).values(relayed_at=func.now())
    )
    for delivery_id in ids:
        defer_attempt(session, delivery_id, 0)
    return ids


async def claim(
    session: AsyncSession, *, delivery_id: int, attempt: int, lease_s: float
) -> Claimed | None:
    """Lease attempt number `attempt` of a pending delivery; None when it is not due (made
    already, in flight elsewhere, delivered, dead or deleted): running a job twice is harmless."""
    row = (
        await session.execute(
            text(
                "UPDATE webhook_deliveries d "
                "SET lease_until = now() + make_interval(secs => :lease) "
                "FROM webhooks w, outbox_events e "
                "WHERE d.id = :id AND d.state = 'pending' AND d.attempts = :attempt "
                "AND (d.lease_until IS NULL OR d.lease_until < now()) "
                "AND w.id = d.webhook_id AND e.id = d.event_id "
                "RETURNING d.id, d.attempts, w.url, w.secret, e.id, e.type, e.payload, "
                "e.request_id, e.created_at"
            ),
            {"id": delivery_id, "attempt": attempt, "lease": lease_s},
        )
    ).first()
    return None if row is None else Claimed(*row)


async def record_attempt(
    session: AsyncSession, *, delivery_id: int, attempt: int, outcome: Outcome, retries: Retries
) -> str:
    """Store the outcome of attempt number `attempt`: delivered, dead (the last attempt
    failed), or pending with the next attempt scheduled after an exponential backoff with
    jitter. Returns the state; a delivery that moved on meanwhile is left as it is."""
    attempts = attempt + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status": outcome.status,
        "last_error": outcome.error,
        "lease_until": None,
    }
    if outcome.ok:
        values |= {"state": "delivered", "finished_at": func.now()}
    elif attempts >= retries.max_attempts:
        values |= {"state": "dead", "finished_at": func.now()}
    else:
        delay = backoff(attempts, base_s=retries.backoff_base_s, max_s=retries.backoff_max_s)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        values |= {"state": "pending", "next_attempt_at": when}
    recorded = await session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.attempts == attempt)
        .values(**values)
        .returning(WebhookDelivery.id)
    )
    if recorded is not None and values["state"] == "pending":
        defer_attempt(session, delivery_id, attempts, values["next_attempt_at"].timestamp())
    state: str = values["state"]
    return state


def backoff(attempts: int, *, base_s: float, max_s: float) -> float:
    """Delay after the `attempts`-th failure: base * 2^(attempts-1), capped, with "equal
    jitter" (between half and all of it), so retries of many deliveries spread out."""
    ceiling = min(max_s, base_s * 2.0 ** (attempts - 1))
    return ceiling / 2 + ceiling / 2 * secrets.randbelow(1001) / 1000


async def unrelayed_events(session: AsyncSession, *, older_than_s: float, limit: int) -> list[int]:
    """Events committed but not fanned out (the queue was down at commit, or lost the job)."""
    ids = await session.scalars(
        select(OutboxEvent.id)
        .where(
            OutboxEvent.relayed_at.is_(None),
            OutboxEvent.created_at < func.now() - timedelta(seconds=older_than_s),
        )
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return list(ids)


async def record_lost_attempts(session: AsyncSession, *, limit: int, retries: Retries) -> int:
    """Count each attempt whose lease ran out unrecorded (its worker was killed, or the job
    cancelled) as a failed attempt, so a delivery that kills its worker still ends dead."""
    lost = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.lease_until < func.now())
        .order_by(WebhookDelivery.lease_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    count = 0
    for delivery_id, attempt in lost.all():
        outcome = Outcome(ok=False, error=LOST)
        await record_attempt(
            session, delivery_id=delivery_id, attempt=attempt, outcome=outcome, retries=retries
        )
        count += 1
    return count


async def overdue_deliveries(
    session: AsyncSession, *, older_than_s: float, limit: int
) -> list[tuple[int, int]]:
    """(id, attempts) of pending deliveries whose attempt should have started by now and that
    no worker holds, oldest first; each is marked due now, which puts it behind the others
    next time: a batch full of rows that do not move cannot keep the rest waiting."""
    overdue = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.state == "pending",
            WebhookDelivery.next_attempt_at < func.now() - timedelta(seconds=older_than_s),
            WebhookDelivery.lease_until.is_(None),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(overdue.scalar_subquery()))
        .values(next_attempt_at=func.now())
        .returning(WebhookDelivery.id, WebhookDelivery.attempts)
    )
    return sorted((delivery_id, attempts) for delivery_id, attempts in rows)


def attempt_key(delivery_id: int, attempt: int) -> str:
    return f"delivery:{delivery_id}:{attempt}"


def defer_attempt(
    session: AsyncSession, delivery_id: int, attempt: int, scheduled: float = 0.0
) -> None:
    queue.defer(
        session,
        queue.DELIVER_WEBHOOK,
        key=attempt_key(delivery_id, attempt),
        scheduled=scheduled,
        delivery_id=delivery_id,
        attempt=attempt,
    )
