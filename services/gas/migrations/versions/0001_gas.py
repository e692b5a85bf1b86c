"""Enterprises and their licences, entrustments, station locks, gas users, cylinders with their
current state, scans and fill checks (both partitioned by month, the partitions made by the service),
the day's violations, leak incidents and their steps, the fleet's figures, and the kit's tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.idempotency import upgrade_idempotency_v2
from citygrid.migrate import create_kit_tables, drop_kit_tables, upgrade_kit_v2

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kit_tables()
    upgrade_kit_v2()
    upgrade_idempotency_v2()
    now = sa.func.now()
    op.create_table(
        "enterprises",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("company_code", sa.String(length=32), nullable=True),
        sa.Column("licence_number", sa.String(length=64), nullable=False),
        sa.Column("licence_valid_until", sa.Date(), nullable=True),
        sa.Column("district_code", sa.String(length=6), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        sa.Column("lock_reason", sa.String(length=500), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["company_code"], ["enterprises.code"], name=op.f("fk_enterprises_company_code_enterprises")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_enterprises")),
    )
    op.create_index("ix_enterprises_company", "enterprises", ["company_code", "code"], unique=False)
    op.create_index("ix_enterprises_district", "enterprises", ["district_code", "code"], unique=False)
    op.create_table(
        "fill_checks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("cylinder_code", sa.String(length=40), nullable=False),
        sa.Column("station_code", sa.String(length=32), nullable=False),
        sa.Column("scale_id", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=True),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.String(length=400), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("at", "id", name="pk_fill_checks"),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("ix_fill_checks_station", "fill_checks", ["station_code", "at"], unique=False)
    op.create_table(
        "fleet_figures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cylinders_by_status", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("open_incidents", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fleet_figures")),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("step", sa.String(length=24), nullable=False),
        sa.Column("premises_type", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("place", sa.String(length=300), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("reporter_name", sa.String(length=200), nullable=True),
        sa.Column("reporter_phone", sa.String(length=32), nullable=True),
        sa.Column("cylinder_code", sa.String(length=40), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index(
        "ix_incidents_open",
        "incidents",
        ["district_code", "reported_at"],
        unique=False,
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_index("ix_incidents_reported", "incidents", ["reported_at", "id"], unique=False)
    op.create_table(
        "scans",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cylinder_code", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status_after", sa.String(length=20), nullable=False),
        sa.Column("enterprise_code", sa.String(length=32), nullable=True),
        sa.Column("operator", sa.String(length=100), nullable=True),
        sa.Column("scale_id", sa.String(length=64), nullable=True),
        sa.Column("net_mass_kg", sa.Numeric(precision=6, scale=2, asdecimal=False), nullable=True),
        sa.Column("fill_batch", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=10), server_default="api", nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("at", "id", name="pk_scans"),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("ix_scans_cylinder", "scans", ["cylinder_code", "at"], unique=False)
    op.create_index(
        "ix_scans_fill_batch",
        "scans",
        ["fill_batch"],
        unique=False,
        postgresql_where=sa.text("fill_batch IS NOT NULL"),
    )
    op.create_table(
        "violations",
        sa.Column("station_code", sa.String(length=32), nullable=False),
        sa.Column("cylinder_code", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reasons", sa.String(length=400), nullable=False),
        sa.Column("refusals", sa.Integer(), server_default="1", nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("station_code", "cylinder_code", "day", name=op.f("pk_violations")),
    )
    op.create_index("ix_violations_day", "violations", ["day"], unique=False)
    op.create_table(
        "entrustments",
        sa.Column("company_code", sa.String(length=32), nullable=False),
        sa.Column("station_code", sa.String(length=32), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["company_code"], ["enterprises.code"], name=op.f("fk_entrustments_company_code_enterprises")
        ),
        sa.ForeignKeyConstraint(
            ["station_code"], ["enterprises.code"], name=op.f("fk_entrustments_station_code_enterprises")
        ),
        sa.PrimaryKeyConstraint("company_code", "station_code", name=op.f("pk_entrustments")),
    )
    op.create_index("ix_entrustments_station", "entrustments", ["station_code"], unique=False)
    op.create_table(
        "gas_users",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("supplier_code", sa.String(length=32), nullable=True),
        sa.Column("stove_sold_on", sa.Date(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["supplier_code"], ["enterprises.code"], name=op.f("fk_gas_users_supplier_code_enterprises")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gas_users")),
    )
    op.create_index("ix_gas_users_district", "gas_users", ["district_code", "id"], unique=False)
    op.create_index("ix_gas_users_stove", "gas_users", ["district_code", "stove_sold_on"], unique=False)
    op.create_table(
        "incident_steps",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("incident_id", sa.UUID(), nullable=False),
        sa.Column("step", sa.String(length=24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_incident_steps_incident_id_incidents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_steps")),
    )
    op.create_index("ix_incident_steps_incident", "incident_steps", ["incident_id", "at"], unique=False)
    op.create_table(
        "station_locks",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("station_code", sa.String(length=32), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["station_code"], ["enterprises.code"], name=op.f("fk_station_locks_station_code_enterprises")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_station_locks")),
    )
    op.create_index("ix_station_locks_station", "station_locks", ["station_code", "at"], unique=False)
    op.create_table(
        "cylinders",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("owner_code", sa.String(length=32), nullable=False),
        sa.Column("manufacturer", sa.String(length=200), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("manufactured_on", sa.Date(), nullable=False),
        sa.Column("last_inspected_on", sa.Date(), nullable=True),
        sa.Column("last_passed_inspection_on", sa.Date(), nullable=True),
        sa.Column("next_inspection_due", sa.Date(), nullable=False),
        sa.Column("end_of_life", sa.Date(), nullable=False),
        sa.Column("tare_kg", sa.Numeric(precision=6, scale=2, asdecimal=False), nullable=True),
        sa.Column("capacity_kg", sa.Numeric(precision=6, scale=2, asdecimal=False), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="in_stock", nullable=False),
        sa.Column("holder_id", sa.UUID(), nullable=True),
        sa.Column("last_scan_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_scan_kind", sa.String(length=20), nullable=True),
        sa.Column("last_lon", sa.Float(), nullable=True),
        sa.Column("last_lat", sa.Float(), nullable=True),
        sa.Column("last_place", sa.String(length=32), nullable=True),
        sa.Column("last_fill_batch", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["holder_id"], ["gas_users.id"], name=op.f("fk_cylinders_holder_id_gas_users")
        ),
        sa.ForeignKeyConstraint(
            ["owner_code"], ["enterprises.code"], name=op.f("fk_cylinders_owner_code_enterprises")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_cylinders")),
    )
    op.create_index("ix_cylinders_end_of_life", "cylinders", ["end_of_life"], unique=False)
    op.create_index(
        "ix_cylinders_fill_batch",
        "cylinders",
        ["last_fill_batch"],
        unique=False,
        postgresql_where=sa.text("last_fill_batch IS NOT NULL"),
    )
    op.create_index(
        "ix_cylinders_holder",
        "cylinders",
        ["holder_id"],
        unique=False,
        postgresql_where=sa.text("holder_id IS NOT NULL"),
    )
    op.create_index(
        "ix_cylinders_owner_due", "cylinders", ["owner_code", "next_inspection_due"], unique=False
    )


def downgrade() -> None:
    op.drop_table("cylinders")
    op.drop_table("station_locks")
    op.drop_table("incident_steps")
    op.drop_table("gas_users")
    op.drop_table("entrustments")
    op.drop_table("violations")
    op.drop_table("scans")
    op.drop_table("incidents")
    op.drop_table("fleet_figures")
    op.drop_table("fill_checks")
    op.drop_table("enterprises")
    drop_kit_tables()
