"""Cameras, the algorithm catalogue, camera overrides, alarms, reviews, re-checks, and the kit's tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.migrate import create_kit_tables, drop_kit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN_ALARM_SQL = "status IN ('candidate', 'pending_review', 'auto_confirmed', 'confirmed')"


def upgrade() -> None:
    create_kit_tables()
    now = sa.func.now()
    op.create_table(
        "cameras",
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(40), nullable=False),
        sa.Column("division_code", sa.String(8), nullable=False),
        sa.Column("district_code", sa.String(6), nullable=True),
        sa.Column("industry_code", sa.String(2), nullable=False),
        sa.Column("device_type", sa.String(3), nullable=False),
        sa.Column("network_code", sa.String(1), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("address", sa.String(300), nullable=True),
        sa.Column("grid_code", sa.String(15), nullable=True),
        sa.Column("engine", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), server_default="unknown", nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("regions", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("camera_id", name="pk_cameras"),
    )
    op.create_index("ix_cameras_district", "cameras", ["district_code", "camera_id"])
    op.create_index("ix_cameras_owner", "cameras", ["owner", "camera_id"])
    op.create_index("ix_cameras_status", "cameras", ["status", "camera_id"])
    op.create_index("ix_cameras_lon_lat", "cameras", ["lon", "lat"])
    op.create_index(
        "ix_cameras_heartbeat",
        "cameras",
        ["last_heartbeat_at"],
        postgresql_where=sa.text("status = 'online'"),
    )
    op.create_table(
        "algorithms",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("group", sa.String(32), nullable=False),
        sa.Column("name_zh", sa.String(100), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("category_code", sa.String(5), nullable=False),
        sa.Column("gates", postgresql.JSONB(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("catalogue_version", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_algorithms"),
    )
    op.create_table(
        "camera_overrides",
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("algorithm_code", sa.String(64), nullable=False),
        sa.Column("gates", postgresql.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.camera_id"],
            name="fk_camera_overrides_camera_id_cameras",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("camera_id", "algorithm_code", name="pk_camera_overrides"),
    )
    op.create_table(
        "alarms",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("algorithm_code", sa.String(64), nullable=False),
        sa.Column("category_code", sa.String(5), nullable=False),
        sa.Column("district_code", sa.String(6), nullable=True),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("auto_confirmed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("box", postgresql.JSONB(), nullable=False),
        sa.Column("best_box", postgresql.JSONB(), nullable=False),
        sa.Column("track_id", sa.String(100), nullable=True),
        sa.Column("best_confidence", sa.Float(), nullable=False),
        sa.Column("detections", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snapshot_sha256", sa.String(64), nullable=True),
        sa.Column("snapshot_content_type", sa.String(20), nullable=True),
        sa.Column("snapshot_size", sa.Integer(), nullable=True),
        sa.Column("snapshot_taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("case_status", sa.String(20), nullable=True),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alarms"),
    )
    op.create_index(
        "ix_alarms_open_key",
        "alarms",
        ["camera_id", "algorithm_code", "last_seen_at"],
        postgresql_where=sa.text(OPEN_ALARM_SQL),
    )
    op.create_index(
        "ix_alarms_key_raised",
        "alarms",
        ["camera_id", "algorithm_code", "raised_at"],
        postgresql_where=sa.text("raised_at IS NOT NULL"),
    )
    op.create_index("ix_alarms_status_raised", "alarms", ["status", "raised_at", "id"])
    op.create_index(
        "ix_alarms_district_status_raised", "alarms", ["district_code", "status", "raised_at", "id"]
    )
    op.create_index("ix_alarms_case", "alarms", ["case_id"], postgresql_where=sa.text("case_id IS NOT NULL"))
    op.create_table(
        "reviews",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("alarm_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("algorithm_code", sa.String(64), nullable=False),
        sa.Column("false_positive", sa.Boolean(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms.id"], name="fk_reviews_alarm_id_alarms", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_algorithm_at", "reviews", ["algorithm_code", "at"])
    op.create_index("ix_reviews_camera_at", "reviews", ["camera_id", "at"])
    op.create_table(
        "rechecks",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("alarm_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("case_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("algorithm_code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("snapshot_sha256", sa.String(64), nullable=True),
        sa.Column("snapshot_content_type", sa.String(20), nullable=True),
        sa.Column("snapshot_size", sa.Integer(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms.id"], name="fk_rechecks_alarm_id_alarms", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rechecks"),
    )
    op.create_index(
        "ix_rechecks_due", "rechecks", ["due_at"], postgresql_where=sa.text("status = 'scheduled'")
    )
    op.create_index("ix_rechecks_alarm", "rechecks", ["alarm_id"])


def downgrade() -> None:
    for table in ("rechecks", "reviews", "alarms", "camera_overrides", "algorithms", "cameras"):
        op.drop_table(table)
    drop_kit_tables()
