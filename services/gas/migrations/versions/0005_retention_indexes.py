"""Indexes the retention rounds read by: captured event ids by capture time, hazards by their
rectification (an open hazard is never deleted). Built concurrently: the tables take writes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from citygrid.migrate import create_index_concurrently

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("ix_epcis_event_ids_captured", "epcis_event_ids", ["captured_at"])
    create_index_concurrently(
        "ix_hazards_rectified",
        "hazards",
        ["rectified_at"],
        postgresql_where=sa.text("rectified_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_hazards_rectified", table_name="hazards")
    op.drop_index("ix_epcis_event_ids_captured", table_name="epcis_event_ids")
