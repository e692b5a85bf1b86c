"""Snapshots by their owner: which alarm (and its district) or re-check names a snapshot, so a
district-bound client gets only its district's images. Built without blocking writers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

from citygrid.migrate import create_index_concurrently

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently(
        "ix_alarms_snapshot",
        "alarms",
        ["snapshot_sha256", "district_code"],
        postgresql_where=sa.text("snapshot_sha256 IS NOT NULL"),
    )
    create_index_concurrently(
        "ix_rechecks_snapshot",
        "rechecks",
        ["snapshot_sha256"],
        postgresql_where=sa.text("snapshot_sha256 IS NOT NULL"),
    )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_rechecks_snapshot", table_name="rechecks", postgresql_concurrently=True)
        op.drop_index("ix_alarms_snapshot", table_name="alarms", postgresql_concurrently=True)
