"""The collection chain: pickups, weighings and movements, the trips assembled from them, the chain's
violations, the round's cursor and dirty vehicles, today's figures.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    now = sa.func.now()
    op.create_table(
        "pickups",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rfid", sa.String(length=32), nullable=False),
        sa.Column("point_code", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("load_stream", sa.String(length=16), nullable=True),
        sa.Column("weight_kg", sa.Float(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("plate", "at", "rfid", name="pk_pickups"),
    )
    op.create_index("ix_pickups_point_stream_at", "pickups", ["point_code", "stream", "at"])
    op.create_index("ix_pickups_at", "pickups", ["at"])
    op.create_table(
        "weighings",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("facility_code", sa.String(length=32), nullable=False),
        sa.Column("weighbridge", sa.String(length=32), nullable=False),
        sa.Column("gross_kg", sa.Float(), nullable=False),
        sa.Column("tare_kg", sa.Float(), nullable=False),
        sa.Column("net_kg", sa.Float(), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("plate", "at", "facility_code", name="pk_weighings"),
    )
    op.create_index("ix_weighings_facility_at", "weighings", ["facility_code", "at"])
    op.create_index("ix_weighings_at", "weighings", ["at"])
    op.create_table(
        "movements",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("place", sa.String(length=32), server_default="", nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("plate", "at", "kind", "place", name="pk_movements"),
    )
    op.create_index("ix_movements_at", "movements", ["at"])
    op.create_table(
        "trips",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=True),
        sa.Column("district_code", sa.String(length=6), nullable=True),
        sa.Column("start", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ending", sa.String(length=20), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("points", postgresql.ARRAY(sa.String(length=32)), server_default="{}", nullable=False),
        sa.Column("pickups", sa.Integer(), nullable=False),
        sa.Column("picked_up_kg", sa.Float(), nullable=False),
        sa.Column("delivered_kg", sa.Float(), nullable=True),
        sa.Column("facility_code", sa.String(length=32), nullable=True),
        sa.Column("recheck_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trips")),
    )
    op.create_index("ix_trips_started", "trips", ["started_at", "id"])
    op.create_index("ix_trips_plate_started", "trips", ["plate", "started_at", "id"])
    op.create_index("ix_trips_facility_started", "trips", ["facility_code", "started_at", "id"])
    op.create_index("ix_trips_district_started", "trips", ["district_code", "started_at", "id"])
    op.create_index(
        "ix_trips_open_started", "trips", ["started_at", "id"], postgresql_where=sa.text("ending = 'open'")
    )
    op.create_index(
        "ix_trips_recheck", "trips", ["recheck_at"], postgresql_where=sa.text("recheck_at IS NOT NULL")
    )
    op.create_table(
        "chain_violations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=True),
        sa.Column("point_code", sa.String(length=32), nullable=True),
        sa.Column("facility_code", sa.String(length=32), nullable=True),
        sa.Column("trip_id", sa.UUID(), nullable=True),
        sa.Column("stream", sa.String(length=16), nullable=True),
        sa.Column("district_code", sa.String(length=6), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("category_code", sa.String(length=5), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_violations")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_chain_violations_dedup_key")),
    )
    op.create_index("ix_chain_violations_at", "chain_violations", ["at", "id"])
    op.create_index("ix_chain_violations_plate_at", "chain_violations", ["plate", "at", "id"])
    op.create_index("ix_chain_violations_district_at", "chain_violations", ["district_code", "at", "id"])
    op.create_index("ix_chain_violations_kind_at", "chain_violations", ["kind", "at", "id"])
    op.create_index("ix_chain_violations_point_at", "chain_violations", ["point_code", "at"])
    op.create_index("ix_chain_violations_trip", "chain_violations", ["trip_id"])
    op.create_index("ix_chain_violations_created", "chain_violations", ["created_at"])
    op.create_table(
        "chain_dirty_vehicles",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_dirty_vehicles")),
    )
    op.create_index("ix_chain_dirty_vehicles_plate", "chain_dirty_vehicles", ["plate"])
    op.create_table(
        "chain_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("missed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_chain_cursor")),
    )
    op.create_table(
        "chain_figures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_figures")),
    )


def downgrade() -> None:
    for table in (
        "chain_figures",
        "chain_cursor",
        "chain_dirty_vehicles",
        "chain_violations",
        "trips",
        "movements",
        "weighings",
        "pickups",
    ):
        op.drop_table(table)
