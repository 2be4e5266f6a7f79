"""The RealWorld JSON shapes as SQL expressions: reads render their documents in PostgreSQL.

A read's statement returns the finished document as text (`json_build_object`), so Python
passes it through: no row tuples turned into models and models into JSON. The shapes here
are the ones several documents share; each read's own statement lives beside its service.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column
from sqlalchemy.orm import InstrumentedAttribute

from app.models import User

# The RealWorld suite wants milliseconds and a zone: 2026-01-02T03:04:05.678Z
_ISO_UTC: ColumnElement[str] = literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'""")


def key(name: str) -> ColumnElement[str]:
    """A JSON key. Inlined as a SQL literal: json_build_object cannot type untyped bind
    parameters."""
    return literal_column(f"'{name}'")


def timestamp(column: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    """A `timestamptz` column as the RealWorld suite writes times (app/schemas.py `Timestamp`)."""
    return func.to_char(func.timezone(literal_column("'UTC'"), column), _ISO_UTC)


def profile(following: ColumnElement[Any]) -> ColumnElement[object]:
    """The `Profile` object of the `User` row in the statement."""
    return func.json_build_object(
        key("username"), User.username,
        key("bio"), User.bio,
        key("image"), User.image,
        key("following"), following,
    )  # fmt: skip
