"""The responsible unit an API consumer works for.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_consumers", sa.Column("unit", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("api_consumers", "unit")
