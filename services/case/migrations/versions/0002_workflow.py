"""The full workflow: merged, accepted, suspended and cancelled cases; merged_into.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW_STATUSES = ("merged", "accepted", "suspended", "cancelled")


def upgrade() -> None:
    for status in NEW_STATUSES:
        op.execute(f"ALTER TYPE case_status ADD VALUE IF NOT EXISTS '{status}'")
    op.add_column("cases", sa.Column("merged_into", postgresql.UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    # PostgreSQL cannot drop enum values; the column goes, the values stay unused.
    op.drop_column("cases", "merged_into")
