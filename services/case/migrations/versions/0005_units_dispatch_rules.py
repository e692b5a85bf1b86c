"""Responsible units, dispatch rules, and the number of the case a duplicate was merged into.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "units",
        sa.Column("code", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("district_code", sa.String(6), nullable=True),
        sa.Column("parent_code", sa.String(100), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["parent_code"], ["units.code"], name="fk_units_parent_code_units"),
        sa.PrimaryKeyConstraint("code", name="pk_units"),
    )
    op.create_index("ix_units_parent_code", "units", ["parent_code"])
    op.create_table(
        "dispatch_rules",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("category_code", sa.String(5), nullable=False),
        sa.Column("area_code", sa.String(15), nullable=False),
        sa.Column("unit_code", sa.String(100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name="fk_dispatch_rules_unit_code_units"),
        sa.PrimaryKeyConstraint("id", name="pk_dispatch_rules"),
        sa.UniqueConstraint("category_code", "area_code", name="uq_dispatch_rules_category_code"),
    )
    op.create_index("ix_dispatch_rules_unit_code", "dispatch_rules", ["unit_code"])
    op.add_column("cases", sa.Column("merged_into_number", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("cases", "merged_into_number")
    op.drop_index("ix_dispatch_rules_unit_code", table_name="dispatch_rules")
    op.drop_table("dispatch_rules")
    op.drop_index("ix_units_parent_code", table_name="units")
    op.drop_table("units")
