"""Webhook subscriptions and deliveries. The API registers, lists and deletes webhooks and
lists deliveries (dead letters included); the worker fans events out into deliveries, claims
one attempt at a time and records its outcome with the next attempt's time."""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import queue
from app.errors import Invalid, NotFound
from app.models import OutboxEvent, Webhook, WebhookDelivery
from app.webhooks import signing, targets
from app.webhooks.schemas import CreatedWebhook, Delivery, NewWebhook
from app.webhooks.schemas import Webhook as WebhookSchema

MAX_WEBHOOKS_PER_USER = 20


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


async def create(
    session: AsyncSession, *, user_id: int, data: NewWebhook, allowed: list[targets.Network]
) -> CreatedWebhook:
    """Register a URL for some event types; it must resolve to addresses we may call."""
    await targets.resolve(data.url, allowed)
    count = await session.scalar(select(func.count()).where(Webhook.user_id == user_id))
    if (count or 0) >= MAX_WEBHOOKS_PER_USER:
        raise Invalid(f"webhook: at most {MAX_WEBHOOKS_PER_USER} per user")
    row = Webhook(
        user_id=user_id, url=data.url, events=sorted(set(data.events)), secret=signing.new_secret()
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return CreatedWebhook.model_validate(row)


async def list_webhooks(session: AsyncSession, *, user_id: int) -> list[WebhookSchema]:
    """The user's webhooks, oldest first (secrets not shown)."""
    rows = await session.scalars(
        select(Webhook).where(Webhook.user_id == user_id).order_by(Webhook.id)
    )
    return [WebhookSchema.model_validate(row) for row in rows]


async def remove(session: AsyncSession, *, user_id: int, webhook_id: int) -> None:
    """Delete one of the user's webhooks with its deliveries."""
    deleted = await session.scalar(
        delete(Webhook)
        .where(Webhook.id == webhook_id, Webhook.user_id == user_id)
        .returning(Webhook.id)
    )
    if deleted is None:
        raise NotFound(f"webhook {webhook_id} not found")


async def list_deliveries(
    session: AsyncSession, *, user_id: int, state: str | None, limit: int, offset: int
) -> tuple[list[Delivery], int]:
    """The user's deliveries, newest first; `state="dead"` lists the dead letters."""
    where = [Webhook.user_id == user_id]
    if state is not None:
        where.append(WebhookDelivery.state == state)
    base = (
        select(WebhookDelivery, OutboxEvent)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .where(*where)
    )
    rows = await session.execute(
        base.order_by(WebhookDelivery.id.desc()).limit(limit).offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    return [_delivery(delivery, event) for delivery, event in rows], total or 0


async def redeliver(session: AsyncSession, *, user_id: int, delivery_id: int) -> Delivery:
    """Send a dead (or delivered) delivery again, with a fresh series of attempts."""
    found = await session.execute(
        select(WebhookDelivery, OutboxEvent)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id, Webhook.user_id == user_id)
        .with_for_update(of=WebhookDelivery)
    )
    row = found.first()
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found")
    delivery, event = row
    if delivery.state != "pending":
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                state="pending",
                attempts=0,
                next_attempt_at=func.now(),
                lease_until=None,
                finished_at=None,
            )
        )
        await session.refresh(delivery)
        _defer_attempt(session, delivery_id, 0)
    return _delivery(delivery, event)


# ---- worker side ----


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
        _defer_attempt(session, delivery_id, 0)
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
    session: AsyncSession,
    claimed: Claimed,
    outcome: Outcome,
    *,
    max_attempts: int,
    backoff_base_s: float,
    backoff_max_s: float,
) -> str:
    """Store an attempt's outcome: delivered, dead (the last attempt failed), or pending with
    the next attempt scheduled after an exponential backoff with jitter. Returns the state."""
    attempts = claimed.attempt + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_status": outcome.status,
        "last_error": outcome.error,
        "lease_until": None,
    }
    if outcome.ok:
        values |= {"state": "delivered", "finished_at": func.now()}
    elif attempts >= max_attempts:
        values |= {"state": "dead", "finished_at": func.now()}
    else:
        delay = backoff(attempts, base_s=backoff_base_s, max_s=backoff_max_s)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        values |= {"state": "pending", "next_attempt_at": when}
        _defer_attempt(session, claimed.delivery_id, attempts, when.timestamp())
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.attempts == claimed.attempt
        )
        .values(**values)
    )
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


async def overdue_deliveries(
    session: AsyncSession, *, older_than_s: float, limit: int
) -> list[tuple[int, int]]:
    """(id, attempts) of pending deliveries whose attempt should have started by now."""
    rows = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(
            WebhookDelivery.state == "pending",
            WebhookDelivery.next_attempt_at < func.now() - timedelta(seconds=older_than_s),
            (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < func.now()),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return [(delivery_id, attempts) for delivery_id, attempts in rows]


def attempt_key(delivery_id: int, attempt: int) -> str:
    return f"delivery:{delivery_id}:{attempt}"


def _defer_attempt(
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


def _delivery(delivery: WebhookDelivery, event: OutboxEvent) -> Delivery:
    return Delivery(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=event.id,
        event_type=event.type,
        state=delivery.state,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.state == "pending" else None,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        payload=event.payload,
    )
