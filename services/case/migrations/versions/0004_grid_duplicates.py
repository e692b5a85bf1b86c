"""The unit grid, each case's place in it, and likely duplicates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OPEN_CASE_SQL = "status IN ('reported', 'registered', 'dispatched', 'accepted', 'suspended', 'handled')"


def upgrade() -> None:
    op.create_table(
        "grid_cells",
        sa.Column("code", sa.String(15), nullable=False),
        sa.Column("district_code", sa.String(6), nullable=False),
        sa.Column("street_code", sa.String(9), nullable=False),
        sa.Column("community_code", sa.String(12), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("feature", postgresql.JSONB(), nullable=False),
        sa.Column("min_lon", sa.Float(), nullable=False),
        sa.Column("min_lat", sa.Float(), nullable=False),
        sa.Column("max_lon", sa.Float(), nullable=False),
        sa.Column("max_lat", sa.Float(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_grid_cells"),
    )
    op.create_index("ix_grid_cells_district_code", "grid_cells", ["district_code"])
    op.add_column("cases", sa.Column("street_code", sa.String(9), nullable=True))
    op.add_column("cases", sa.Column("community_code", sa.String(12), nullable=True))
    op.add_column("cases", sa.Column("grid_code", sa.String(15), nullable=True))
    op.add_column("cases", sa.Column("likely_duplicate_of", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_index(
        "ix_cases_category_lat", "cases", ["category_code", "lat"], postgresql_where=sa.text(OPEN_CASE_SQL)
    )


def downgrade() -> None:
    op.drop_index("ix_cases_category_lat", table_name="cases")
    for column in ("likely_duplicate_of", "grid_code", "community_code", "street_code"):
        op.drop_column("cases", column)
    op.drop_index("ix_grid_cells_district_code", table_name="grid_cells")
    op.drop_table("grid_cells")
