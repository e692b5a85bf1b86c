"""EPCIS events captured whole that are no scan of a registered cylinder.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "epcis_events",
        sa.Column("event_id", sa.String(500), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("biz_step", sa.String(300), nullable=True),
        sa.Column("read_point", sa.String(500), nullable=True),
        sa.Column(
            "epcs", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False
        ),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("capture_id", sa.String(40), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_epcis_events"),
    )
    op.create_index("ix_epcis_events_time", "epcis_events", ["event_time", "event_id"])
    op.create_index("ix_epcis_events_epcs", "epcis_events", ["epcs"], postgresql_using="gin")
    op.create_index("ix_epcis_events_recorded", "epcis_events", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("epcis_events")
