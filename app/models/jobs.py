"""Tables of the background work: bulk imports, the transactional outbox, webhooks.

PostgreSQL holds the state of every job; Redis (SAQ) only carries and schedules the work. A
job lost from Redis (a restart without persistence) is found again by the periodic relay,
which re-enqueues whatever is due here (app/workers/jobs.py).
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class Import(Base):
    """One NDJSON upload of articles. `next_seq` is the cursor: the first chunk not yet
    imported, advanced in the same transaction that inserts the chunk's articles."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # queued -> running -> done | failed
    state: Mapped[str] = mapped_column(Text, server_default="queued")
    total_lines: Mapped[int] = mapped_column(Integer, server_default="0")
    processed_lines: Mapped[int] = mapped_column(Integer, server_default="0")
    imported_count: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    chunk_count: Mapped[int] = mapped_column(Integer, server_default="0")
    # The client's Idempotency-Key: the same upload sent twice is one import. With the
    # upload's SHA-256 (hex), so that the key sent with another body is refused.
    client_key: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            None,
            "user_id",
            "client_key",
            unique=True,
            postgresql_where=text("client_key IS NOT NULL"),
        ),
        Index(None, "state", postgresql_where=text("state IN ('queued', 'running')")),
    )


class ImportChunk(Base):
    """Raw NDJSON lines of an import, a batch each, deleted once imported."""

    __tablename__ = "import_chunks"

    import_id: Mapped[int] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_line: Mapped[int] = mapped_column(Integer)  # 1-based line number in the upload
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ImportLineError(Base):
    """A line that was not imported, and why."""

    __tablename__ = "import_errors"

    import_id: Mapped[int] = mapped_column(
        ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True
    )
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[str] = mapped_column(Text)


class OutboxEvent(Base):
    """An event, written in the transaction of the change it reports (transactional outbox):
    a rolled-back change leaves no event, a committed one an event that is relayed for sure."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    type: Mapped[str] = mapped_column(Text)  # article.published, comment.created
    # The user whose webhooks receive the event (the article's author).
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    relayed_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "id", postgresql_where=text("relayed_at IS NULL")),)


class Webhook(Base):
    """A user's endpoint for the events of their own articles."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret: Mapped[str] = mapped_column(Text)  # HMAC-SHA256 key for X-Conduit-Signature
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (Index(None, "user_id"),)


class WebhookDelivery(Base):
    """One event to one webhook: pending until a 2xx (delivered) or the last failed attempt
    (dead, the dead letter). `lease_until` marks an attempt in flight, so two workers never
    send the same attempt at once, and no database connection is held while sending."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(Text, server_default="pending")  # delivered, dead
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    lease_until: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "webhook_id", "event_id", unique=True),
        Index(None, "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index(None, "webhook_id", "state", "id"),
        Index(None, "event_id"),
    )
