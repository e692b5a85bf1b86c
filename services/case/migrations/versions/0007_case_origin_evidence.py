"""Cases raised by other services: the 'system' source and each case's origin (evidence: 0006).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD VALUE may not run in a transaction block before PostgreSQL 12, and even later the new
    # value cannot be used in the transaction that added it: commit it on its own.
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE case_source ADD VALUE IF NOT EXISTS 'system'")
    op.add_column("cases", sa.Column("origin_service", sa.String(16), nullable=True))
    op.add_column("cases", sa.Column("origin_reference", sa.String(100), nullable=True))
    op.create_index("ux_cases_origin", "cases", ["origin_service", "origin_reference"], unique=True)


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; 'system' stays, unused once the cases that carry it go.
    op.drop_index("ux_cases_origin", table_name="cases")
    op.drop_column("cases", "origin_reference")
    op.drop_column("cases", "origin_service")
