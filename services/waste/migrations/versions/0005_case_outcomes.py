"""The case raised for each violation, bin-side and chain: its id, its status, when it ended.

Nullable columns without defaults: no rewrite of either table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("violations", "chain_violations")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=True))
        op.add_column(table, sa.Column("case_status", sa.String(16), nullable=True))
        op.add_column(table, sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        for column in ("resolved_at", "case_status", "case_id"):
            op.drop_column(table, column)
