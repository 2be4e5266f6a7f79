"""Shared schema plumbing: camelCase aliases and the RealWorld timestamp format."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel


def _iso_millis(value: datetime) -> str:
    # Always milliseconds and "Z": the RealWorld suite expects a fractional part.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _storable(value: str) -> str:
    # PostgreSQL text holds neither NUL nor lone surrogates (valid JSON can carry both).
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def is_storable(value: str) -> bool:
    """Whether `Storable` accepts the value."""
    try:
        _storable(value)
    except ValueError:
        return False
    return True


Storable = AfterValidator(_storable)
"""Attach to every client-supplied string that reaches the database."""

Timestamp = Annotated[datetime, PlainSerializer(_iso_millis, return_type=str)]


class Schema(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        serialize_by_alias=True,
    )


class Profile(Schema):
    username: str
    bio: str
    image: str | None
    following: bool = False
