"""The sanitation fleet's positions (partitioned by day, made by the service ahead of time) and the
JT/T 808 registration of each vehicle's terminal.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: no rewrite of the register.
    op.add_column("vehicles", sa.Column("auth_code_sha256", sa.String(length=64), nullable=True))
    op.add_column("vehicles", sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "positions",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("speed_kmh", sa.Float(), nullable=False),
        sa.Column("direction", sa.SmallInteger(), nullable=False),
        sa.Column("altitude_m", sa.Integer(), nullable=True),
        sa.Column("alarm", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.Column("load", sa.SmallInteger(), nullable=True),
        sa.Column("mileage_km", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("blind_area", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("plate", "at", "received_at", name="pk_positions"),
        postgresql_partition_by="RANGE (at)",
    )
    # The table is new and has no partition yet: the index is built on nothing.
    op.create_index("ix_positions_txid", "positions", ["txid"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_positions_txid", table_name="positions")
    op.drop_table("positions")
    op.drop_column("vehicles", "registered_at")
    op.drop_column("vehicles", "auth_code_sha256")
