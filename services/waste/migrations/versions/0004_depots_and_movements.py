"""Depots, the facilities' radius, and the cursor of the round that reads the vehicles' movements
from their positions, with where it stands on each vehicle's track.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from citygrid.migrate import create_partitioned_index_concurrently

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: PostgreSQL stores it in the catalogue, with no rewrite of the table.
    op.add_column("facilities", sa.Column("radius_m", sa.Float(), server_default="150", nullable=False))
    op.create_table(
        "depots",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("radius_m", sa.Float(), server_default="100", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_depots")),
    )
    op.create_index("ix_depots_district", "depots", ["district_code", "code"])
    op.create_table(
        "position_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_position_cursor")),
    )
    op.create_table(
        "vehicle_tracks",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("depots", sa.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("facilities", sa.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("stop_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_lon", sa.Float(), nullable=True),
        sa.Column("stop_lat", sa.Float(), nullable=True),
        sa.Column("stop_last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_last_lon", sa.Float(), nullable=True),
        sa.Column("stop_last_lat", sa.Float(), nullable=True),
        sa.Column("redo_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("plate", name=op.f("pk_vehicle_tracks")),
        postgresql_with={"fillfactor": "50"},
    )

    # The positions' BRIN index summarizes pages as they fill: the round reads the newest rows, which
    # an index summarized only at VACUUM would leave to a scan of every page since.
    op.drop_index("ix_positions_txid", table_name="positions")
    create_partitioned_index_concurrently(
        "ix_positions_txid", "positions", ["txid"], using="brin", storage={"autosummarize": "on"}
    )


def downgrade() -> None:
    op.drop_index("ix_positions_txid", table_name="positions")
    create_partitioned_index_concurrently("ix_positions_txid", "positions", ["txid"], using="brin")
    op.drop_table("vehicle_tracks")
    op.drop_table("position_cursor")
    op.drop_index("ix_depots_district", table_name="depots")
    op.drop_table("depots")
    op.drop_column("facilities", "radius_m")
