"""Reference versions (every replica reloads the work calendar when another one changed it) and
evaluation snapshots (today's figures computed once for all replicas). Two new, small tables.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reference_versions",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_reference_versions"),
    )
    op.create_table(
        "evaluation_snapshots",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("groups", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_evaluation_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("evaluation_snapshots")
    op.drop_table("reference_versions")
