from datetime import datetime

from sqlalchemy import Index, LargeBinary, SmallInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class IdempotencyKey(Base):
    """The first completed response to a request sent with an `Idempotency-Key`, written in
    the same transaction as the request's effect (see app/middleware/idempotency.py)."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(Text, primary_key=True)  # "user:<id>" or "client:<ip>"
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(SmallInteger)
    content_type: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime]

    __table_args__ = (Index(None, "expires_at"),)
