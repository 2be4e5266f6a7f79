"""Webhook subscriptions and deliveries, the API's side: register, list and delete webhooks,
list deliveries (dead letters included), send one again. The worker's side is attempts.py."""

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Invalid, NotFound
from app.models import OutboxEvent, Webhook, WebhookDelivery
from app.webhooks import attempts, signing, targets
from app.webhooks.schemas import CreatedWebhook, Delivery, NewWebhook
from app.webhooks.schemas import Webhook as WebhookSchema

MAX_WEBHOOKS_PER_USER = 20


async def create(
    session: AsyncSession, *, user_id: int, data: NewWebhook, rules: targets.Policy
) -> CreatedWebhook:
    """Register a URL for some event types; it must resolve to addresses we may call, and is
    stored in the normal form the worker sends to."""
    target = await targets.resolve(data.url, rules)
    # The user's row lock makes the count and the insert one step: two registrations at once
    # would both count 19 under READ COMMITTED. NO KEY UPDATE leaves foreign-key checks
    # (the user's articles, follows) unblocked.
    await session.execute(
        text("SELECT 1 FROM users WHERE id = :id FOR NO KEY UPDATE"), {"id": user_id}
    )
    count = await session.scalar(select(func.count()).where(Webhook.user_id == user_id))
    if (count or 0) >= MAX_WEBHOOKS_PER_USER:
        raise Invalid(f"webhook: at most {MAX_WEBHOOKS_PER_USER} per user")
    row = Webhook(
        user_id=user_id,
        url=target.url.url,
        events=sorted(set(data.events)),
        secret=signing.new_secret(),
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
        attempts.defer_attempt(session, delivery_id, 0)
    return _delivery(delivery, event)


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
