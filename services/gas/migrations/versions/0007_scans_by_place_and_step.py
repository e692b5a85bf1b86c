"""Scans by the enterprise that scanned them and by their kind, in time order: an EPCIS query by
``EQ_readPoint`` or by a rare ``EQ_bizStep`` reads its own index range instead of walking every
scan of every month. Built on each partition without blocking the scans' writers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op

from citygrid.migrate import create_partitioned_index_concurrently

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_partitioned_index_concurrently("ix_scans_enterprise", "scans", ["enterprise_code", "at", "id"])
    create_partitioned_index_concurrently("ix_scans_kind", "scans", ["kind", "at", "id"])


def downgrade() -> None:
    op.drop_index("ix_scans_kind", table_name="scans")
    op.drop_index("ix_scans_enterprise", table_name="scans")
