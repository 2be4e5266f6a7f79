from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from app.schemas import Schema, Storable, Timestamp

EventType = Literal["article.published", "comment.created"]
DeliveryState = Literal["pending", "delivered", "dead"]
Url = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), Storable
]


class NewWebhook(Schema):
    url: Url
    events: list[EventType] = Field(min_length=1, max_length=2)


class NewWebhookRequest(Schema):
    webhook: NewWebhook


class Webhook(Schema):
    id: int
    url: str
    events: list[str]
    created_at: Timestamp


class CreatedWebhook(Webhook):
    """Shown once, at creation: the HMAC-SHA256 key of `X-Conduit-Signature`."""

    secret: str


class CreatedWebhookResponse(Schema):
    webhook: CreatedWebhook


class MultipleWebhooksResponse(Schema):
    webhooks: list[Webhook]


class Delivery(Schema):
    id: int
    webhook_id: int
    event_id: int
    event_type: str
    state: DeliveryState
    attempts: int
    next_attempt_at: Timestamp | None
    last_status: int | None
    last_error: str | None
    created_at: Timestamp
    finished_at: Timestamp | None
    payload: dict[str, object]


class SingleDeliveryResponse(Schema):
    delivery: Delivery


class MultipleDeliveriesResponse(Schema):
    deliveries: list[Delivery]
    deliveries_count: int
