"""Cases raised by other services: the 'system' source, each case's origin, and its evidence.

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0004"
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
    op.create_table(
        "case_evidence",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_evidence_case_id_cases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_case_evidence"),
        sa.UniqueConstraint("case_id", "sha256", name="uq_case_evidence_case_id"),
    )


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; 'system' stays, unused once the cases that carry it go.
    op.drop_table("case_evidence")
    op.drop_index("ux_cases_origin", table_name="cases")
    op.drop_column("cases", "origin_reference")
    op.drop_column("cases", "origin_service")
