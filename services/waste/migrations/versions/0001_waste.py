"""Drop-off points with their bins, collection points, vehicles, end facilities, routes, the AI
boxes' events, violations, and the kit's tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.idempotency import upgrade_idempotency_v2
from citygrid.migrate import create_kit_tables, drop_kit_tables, upgrade_kit_v2

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _registered() -> list[sa.Column[Any]]:
    return [
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    create_kit_tables()
    upgrade_kit_v2()
    upgrade_idempotency_v2()
    now = sa.func.now()
    op.create_table(
        "drop_off_points",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("community", sa.String(length=100), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column(
            "opening_hours", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column("cameras", postgresql.ARRAY(sa.String(length=20)), server_default="{}", nullable=False),
        sa.Column("contact_name", sa.String(length=100), nullable=True),
        sa.Column("contact_phone", sa.String(length=32), nullable=True),
        *_registered(),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_drop_off_points")),
    )
    op.create_index("ix_drop_off_points_district", "drop_off_points", ["district_code", "code"])
    op.create_table(
        "bins",
        sa.Column("rfid", sa.String(length=32), nullable=False),
        sa.Column("point_code", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("capacity_l", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["point_code"],
            ["drop_off_points.code"],
            name=op.f("fk_bins_point_code_drop_off_points"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rfid", name=op.f("pk_bins")),
    )
    op.create_index("ix_bins_point", "bins", ["point_code", "rfid"])
    op.create_table(
        "collection_points",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("streams", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        *_registered(),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_collection_points")),
    )
    op.create_index("ix_collection_points_district", "collection_points", ["district_code", "code"])
    op.create_table(
        "vehicles",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("terminal_phone", sa.String(length=20), nullable=False),
        sa.Column("driver_name", sa.String(length=100), nullable=True),
        sa.Column("driver_phone", sa.String(length=32), nullable=True),
        *_registered(),
        sa.PrimaryKeyConstraint("plate", name=op.f("pk_vehicles")),
        sa.UniqueConstraint("terminal_phone", name=op.f("uq_vehicles_terminal_phone")),
    )
    op.create_index("ix_vehicles_district", "vehicles", ["district_code", "plate"])
    op.create_table(
        "facilities",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("streams", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column(
            "weighbridges", postgresql.ARRAY(sa.String(length=32)), server_default="{}", nullable=False
        ),
        *_registered(),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_facilities")),
    )
    op.create_index("ix_facilities_district", "facilities", ["district_code", "code"])
    op.create_table(
        "routes",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=True),
        sa.Column("days", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("time_window", sa.String(length=11), nullable=False),
        sa.Column("stops", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("facility_code", sa.String(length=32), nullable=True),
        *_registered(),
        sa.Column(
            "schedule_changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["plate"], ["vehicles.plate"], name=op.f("fk_routes_plate_vehicles")),
        sa.ForeignKeyConstraint(
            ["facility_code"], ["facilities.code"], name=op.f("fk_routes_facility_code_facilities")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_routes")),
    )
    op.create_index("ix_routes_plate", "routes", ["plate", "code"])
    op.create_index("ix_routes_district", "routes", ["district_code", "code"])
    op.create_table(
        "bin_events",
        sa.Column("point_code", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("observed", sa.String(length=24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("bin_rfid", sa.String(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("violation_id", sa.UUID(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("point_code", "event_id", name="pk_bin_events"),
    )
    op.create_index("ix_bin_events_received", "bin_events", ["received_at"])
    op.create_table(
        "violations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("point_code", sa.String(length=32), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("episode_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observations", sa.Integer(), server_default="1", nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("category_code", sa.String(length=5), nullable=False),
        sa.Column("snapshots", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("source_alarm", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_violations")),
        sa.UniqueConstraint("point_code", "kind", "episode_started_at", name="uq_violations_episode"),
        sa.UniqueConstraint("source_alarm", name=op.f("uq_violations_source_alarm")),
    )
    op.create_index("ix_violations_point_kind_seen", "violations", ["point_code", "kind", "last_seen_at"])
    op.create_index(
        "ix_violations_district_started", "violations", ["district_code", "episode_started_at", "id"]
    )
    op.create_index("ix_violations_started", "violations", ["episode_started_at", "id"])
    op.create_index("ix_violations_created", "violations", ["created_at"])


def downgrade() -> None:
    op.drop_table("violations")
    op.drop_table("bin_events")
    op.drop_table("routes")
    op.drop_table("facilities")
    op.drop_table("vehicles")
    op.drop_table("collection_points")
    op.drop_table("bins")
    op.drop_table("drop_off_points")
    drop_kit_tables()
