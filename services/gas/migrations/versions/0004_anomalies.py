"""Anomalies found in cylinders' traces: implausible travel, deliveries to unregistered users, fills
outside the owner's network.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anomalies",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("cylinder_code", sa.String(40), nullable=False),
        sa.Column("enterprise_code", sa.String(32), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_anomalies"),
    )
    op.create_index("ix_anomalies_kind", "anomalies", ["kind", "detected_at", "id"])
    op.create_index("ix_anomalies_cylinder", "anomalies", ["cylinder_code", "detected_at"])
    op.create_index("ix_anomalies_detected", "anomalies", ["detected_at"])


def downgrade() -> None:
    op.drop_table("anomalies")
