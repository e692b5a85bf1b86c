"""EPCIS capture jobs and the event ids captured; household safety inspections with their hazards,
and safety outreach activities.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
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
        "capture_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("success", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("error_behaviour", sa.String(length=10), server_default="rollback", nullable=False),
        sa.Column(
            "errors",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("events", sa.Integer(), server_default="0", nullable=False),
        sa.Column("captured_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_jobs")),
    )
    op.create_index("ix_capture_jobs_created", "capture_jobs", ["created_at"], unique=False)
    op.create_table(
        "epcis_event_ids",
        sa.Column("event_id", sa.String(length=500), nullable=False),
        sa.Column("scan_id", sa.UUID(), nullable=False),
        sa.Column("scan_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_epcis_event_ids")),
    )
    op.create_index("ix_epcis_event_ids_scan", "epcis_event_ids", ["scan_id"], unique=False)
    op.create_table(
        "outreach_activities",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("street", sa.String(length=100), nullable=True),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("place", sa.String(length=300), nullable=False),
        sa.Column("topic", sa.String(length=300), nullable=False),
        sa.Column("attendance", sa.Integer(), nullable=False),
        sa.Column("organiser", sa.String(length=200), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outreach_activities")),
    )
    op.create_index(
        "ix_outreach_district_day", "outreach_activities", ["district_code", "held_on"], unique=False
    )
    op.create_table(
        "safety_inspections",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inspector", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["gas_users.id"], name=op.f("fk_safety_inspections_user_id_gas_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_inspections")),
    )
    op.create_index(
        "ix_safety_inspections_district",
        "safety_inspections",
        ["district_code", "inspected_at"],
        unique=False,
    )
    op.create_index(
        "ix_safety_inspections_user", "safety_inspections", ["user_id", "inspected_at"], unique=False
    )
    op.create_table(
        "hazards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("inspection_id", sa.UUID(), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column("rectify_by", sa.Date(), nullable=False),
        sa.Column("rectified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rectified_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["safety_inspections.id"],
            name=op.f("fk_hazards_inspection_id_safety_inspections"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hazards")),
    )
    op.create_index("ix_hazards_inspection", "hazards", ["inspection_id"], unique=False)
    op.create_index(
        "ix_hazards_open",
        "hazards",
        ["district_code", "rectify_by"],
        unique=False,
        postgresql_where=sa.text("rectified_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("hazards")
    op.drop_table("safety_inspections")
    op.drop_table("outreach_activities")
    op.drop_table("epcis_event_ids")
    op.drop_table("capture_jobs")
