"""Evidence photos (uploaded here or held by a raising service), handlers' check-ins, extension requests, who accepted a case, the unit task index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TASK_CASE_SQL = "status IN ('dispatched', 'accepted', 'suspended')"


def _case_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["case_id"], ["cases.id"], name=f"fk_{table}_case_id_cases", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.add_column("cases", sa.Column("accepted_by", sa.String(200), nullable=True))
    op.create_index(
        "ix_cases_unit_tasks",
        "cases",
        ["unit", "deadline_at", "id"],
        postgresql_where=sa.text(TASK_CASE_SQL),
    )
    op.create_table(
        "case_evidence",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("service", sa.String(16), nullable=True),
        sa.Column("url", sa.String(500), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uploaded_by", sa.String(200), nullable=False),
        sa.Column("uploaded_by_name", sa.String(200), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        _case_fk("case_evidence"),
        sa.PrimaryKeyConstraint("id", name="pk_case_evidence"),
    )
    op.create_index("ix_case_evidence_case", "case_evidence", ["case_id", "uploaded_at", "id"])
    op.create_index("uq_case_evidence_content", "case_evidence", ["case_id", "kind", "sha256"], unique=True)
    op.create_table(
        "case_check_ins",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(100), nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("far", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        _case_fk("case_check_ins"),
        sa.PrimaryKeyConstraint("id", name="pk_case_check_ins"),
    )
    op.create_index("ix_case_check_ins_case", "case_check_ins", ["case_id", "at", "id"])
    op.create_table(
        "case_extensions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_by_name", sa.String(200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_by_name", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        _case_fk("case_extensions"),
        sa.PrimaryKeyConstraint("id", name="pk_case_extensions"),
    )
    op.create_index("ix_case_extensions_case", "case_extensions", ["case_id", "requested_at", "id"])
    op.create_index(
        "uq_case_extensions_pending",
        "case_extensions",
        ["case_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("case_extensions")
    op.drop_table("case_check_ins")
    op.drop_table("case_evidence")
    op.drop_index("ix_cases_unit_tasks", table_name="cases")
    op.drop_column("cases", "accepted_by")
