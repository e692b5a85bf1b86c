"""Category catalogue, work-calendar years, and the stage clock of each case.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CLOCK_COLUMNS = (
    ("stage", sa.String(16)),
    ("stage_started_at", sa.DateTime(timezone=True)),
    ("deadline_at", sa.DateTime(timezone=True)),
    ("paused_remaining_seconds", sa.Float()),
    ("overdue_at", sa.DateTime(timezone=True)),
    ("dispatched_at", sa.DateTime(timezone=True)),
    ("handled_at", sa.DateTime(timezone=True)),
    ("closed_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.create_table(
        "categories",
        sa.Column("code", sa.String(5), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("big_class_code", sa.String(2), nullable=False),
        sa.Column("name_zh", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("limits", postgresql.JSONB(), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("default_unit_type", sa.String(40), nullable=False),
        sa.Column("open311_service_code", sa.String(40), nullable=False),
        sa.Column("open311_group", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("catalogue_version", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_categories"),
        sa.UniqueConstraint("open311_service_code", name="uq_categories_open311_service_code"),
    )
    op.create_table(
        "calendar_years",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("year", name="pk_calendar_years"),
    )
    for name, column_type in CLOCK_COLUMNS:
        op.add_column("cases", sa.Column(name, column_type, nullable=True))
    op.create_index(
        "ix_cases_due",
        "cases",
        ["deadline_at"],
        postgresql_where=sa.text("overdue_at IS NULL AND deadline_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_cases_due", table_name="cases")
    for name, _ in reversed(CLOCK_COLUMNS):
        op.drop_column("cases", name)
    op.drop_table("calendar_years")
    op.drop_table("categories")
