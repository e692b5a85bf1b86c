"""Open311: the reporter's email on a case, and what an Open311 client sent beside the case.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("reporter_email", sa.String(254), nullable=True))
    op.create_table(
        "open311_submissions",
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("media_url", sa.String(2000), nullable=True),
        sa.Column("device_id", sa.String(100), nullable=True),
        sa.Column("account_id", sa.String(100), nullable=True),
        sa.Column("attributes", postgresql.JSONB(), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name="fk_open311_submissions_case_id_cases",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("case_id", name="pk_open311_submissions"),
    )


def downgrade() -> None:
    op.drop_table("open311_submissions")
    op.drop_column("cases", "reporter_email")
