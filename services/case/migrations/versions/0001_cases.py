"""Cases, their history, daily number counters, and the kit's tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.migrate import create_kit_tables, drop_kit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("reported", "registered", "rejected", "dispatched", "handled", "closed")
SOURCES = ("inspector", "video", "public", "hotline", "media", "superior")


def upgrade() -> None:
    create_kit_tables()
    status = postgresql.ENUM(*STATUSES, name="case_status", create_type=False)
    source = postgresql.ENUM(*SOURCES, name="case_source", create_type=False)
    status.create(op.get_bind(), checkfirst=True)
    source.create(op.get_bind(), checkfirst=True)
    op.create_table(
        "cases",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("category_code", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("address", sa.String(300), nullable=True),
        sa.Column("district_code", sa.String(6), nullable=False),
        sa.Column("source", source, nullable=False),
        sa.Column("reporter_name", sa.String(100), nullable=True),
        sa.Column("reporter_phone", sa.String(20), nullable=True),
        sa.Column("unit", sa.String(100), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reported_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("number", name="uq_cases_number"),
    )
    op.create_index("ix_cases_created", "cases", ["created_at", "id"])
    op.create_index("ix_cases_status_created", "cases", ["status", "created_at", "id"])
    op.create_index("ix_cases_district_created", "cases", ["district_code", "created_at", "id"])
    op.create_index("ix_cases_category_created", "cases", ["category_code", "created_at", "id"])
    op.create_table(
        "case_history",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", status, nullable=True),
        sa.Column("to_status", status, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("unit", sa.String(100), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_history_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_history"),
    )
    op.create_index("ix_case_history_case", "case_history", ["case_id", "at", "id"])
    op.create_table(
        "case_number_counters",
        sa.Column("district_code", sa.String(6), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("district_code", "day", name="pk_case_number_counters"),
    )


def downgrade() -> None:
    op.drop_table("case_number_counters")
    op.drop_table("case_history")
    op.drop_table("cases")
    sa.Enum(name="case_source").drop(op.get_bind(), checkfirst=True)
    sa.Enum(name="case_status").drop(op.get_bind(), checkfirst=True)
    drop_kit_tables()
