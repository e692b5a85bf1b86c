"""Manifests newest first city-wide (the list without a filter, the city's closure rates) and the
unfinished ones by status (the gauge of manifests by state). Built without blocking writers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from citygrid.migrate import create_index_concurrently

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("ix_manifests_issued", "manifests", ["issued_at", "id"])
    create_index_concurrently(
        "ix_manifests_unfinished_status",
        "manifests",
        ["status"],
        postgresql_where=sa.text("status NOT IN ('closed', 'cancelled')"),
    )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_manifests_unfinished_status", table_name="manifests", postgresql_concurrently=True)
        op.drop_index("ix_manifests_issued", table_name="manifests", postgresql_concurrently=True)
