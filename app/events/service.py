"""The transactional outbox: `record` writes an event in the transaction of the change it
reports; after commit the event is relayed to the job queue (and, failing that, by the
worker's periodic relay), which fans it out to the owner's webhooks (app/webhooks)."""

from collections.abc import Mapping

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app import queue
from app.observability.context import current_request_id

ARTICLE_PUBLISHED = "article.published"
COMMENT_CREATED = "comment.created"
TYPES = (ARTICLE_PUBLISHED, COMMENT_CREATED)

# Only when the owner has a webhook for this type: no row, no job, for everyone else.
_RECORD = text(
    "INSERT INTO outbox_events (type, owner_id, payload, request_id) "
    "SELECT :type, :owner_id, :payload, :request_id "
    "WHERE EXISTS (SELECT 1 FROM webhooks WHERE user_id = :owner_id AND :type = ANY(events)) "
    "RETURNING id"
).bindparams(bindparam("payload", type_=JSONB))


async def record(
    session: AsyncSession, event_type: str, *, owner_id: int, data: str | Mapping[str, object]
) -> None:
    """Write an `event_type` event for the webhooks of `owner_id` in the current transaction; `data` is
    the event's JSON object (text or a mapping)."""
    payload = orjson.loads(data) if isinstance(data, str) else dict(data)
    event_id = await session.scalar(
        _RECORD,
        {
            "type": event_type,
            "owner_id": owner_id,
            "payload": payload,
            "request_id": current_request_id(),
        },
    )
    if event_id is not None:
        queue.defer(session, queue.RELAY_EVENT, key=f"event:{event_id}", event_id=event_id)
