"""import request hash, user token version

Revision ID: afaefb19b1ce
Revises: 48c6f24c20cf
Create Date: 2026-12-05 22:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "afaefb19b1ce"
down_revision: str | None = "48c6f24c20cf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both nullable or with a default: no table rewrite, no long lock on a live table.
    op.add_column("imports", sa.Column("request_hash", sa.Text(), nullable=True))
    op.add_column(
        "users", sa.Column("token_version", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("users", "token_version")
    op.drop_column("imports", "request_hash")
