"""Webhooks: register URLs for the events of one's own articles, list deliveries and dead
letters, send a delivery again. Deliveries are signed (see app/webhooks/signing.py)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.dependencies import CurrentUser, PageDep, SessionDep, SettingsDep, ViewerId
from app.openapi import error_responses
from app.webhooks import service as webhooks
from app.webhooks.schemas import (
    CreatedWebhookResponse,
    DeliveryState,
    MultipleDeliveriesResponse,
    MultipleWebhooksResponse,
    NewWebhookRequest,
    SingleDeliveryResponse,
)
from app.webhooks.targets import policy

router = APIRouter(prefix="/webhooks", tags=["Webhooks"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("", status_code=201, responses=error_responses(401))
async def create_webhook(
    body: NewWebhookRequest, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> CreatedWebhookResponse:
    """Register a URL for `article.published` and/or `comment.created` on one's articles; the
    answer carries the signing secret, shown only here."""
    rules = policy(settings)
    webhook = await webhooks.create(session, user_id=user.id, data=body.webhook, rules=rules)
    return CreatedWebhookResponse(webhook=webhook)


@router.get("", responses=error_responses(401))
async def list_webhooks(viewer_id: ViewerId, session: SessionDep) -> MultipleWebhooksResponse:
    """The current user's webhooks."""
    return MultipleWebhooksResponse(
        webhooks=await webhooks.list_webhooks(session, user_id=viewer_id)
    )


# `:int`: "/webhooks/deliveries" must not route here as the webhook "deliveries" (DELETE on it
# is a 405 naming GET, not a 422 about an id).
@router.delete("/{webhook_id:int}", status_code=204, responses=error_responses(401, 404))
async def delete_webhook(webhook_id: Id, user: CurrentUser, session: SessionDep) -> Response:
    """Delete a webhook and its deliveries."""
    # CurrentUser, not ViewerId: a write checks that the token was not revoked.
    await webhooks.remove(session, user_id=user.id, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get("/deliveries", responses=error_responses(401))
async def list_deliveries(
    viewer_id: ViewerId,
    session: SessionDep,
    page: PageDep,
    state: Annotated[DeliveryState | None, Query()] = None,
) -> MultipleDeliveriesResponse:
    """Deliveries to the current user's webhooks, newest first; `state=dead` lists the dead
    letters (every attempt failed)."""
    deliveries, total = await webhooks.list_deliveries(
        session, user_id=viewer_id, state=state, limit=page.limit, offset=page.offset
    )
    return MultipleDeliveriesResponse(deliveries=deliveries, deliveries_count=total)


@router.post(
    "/deliveries/{delivery_id}/retry", status_code=202, responses=error_responses(401, 404)
)
async def retry_delivery(
    delivery_id: Id, user: CurrentUser, session: SessionDep
) -> SingleDeliveryResponse:
    """Send a delivery again (a dead letter, typically) with a fresh series of attempts."""
    delivery = await webhooks.redeliver(session, user_id=user.id, delivery_id=delivery_id)
    return SingleDeliveryResponse(delivery=delivery)
