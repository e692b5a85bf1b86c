"""Transport companies, trucks with their terminals, drivers, construction and disposal sites,
approved routes, transport areas with their time windows, positions (partitioned by day, the
partitions made by the service), and the kit's tables.

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
        "companies",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("licence_number", sa.String(length=64), nullable=False),
        sa.Column("licence_valid_until", sa.Date(), nullable=True),
        sa.Column("district_code", sa.String(length=6), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_companies")),
    )
    op.create_table(
        "trucks",
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("company_code", sa.String(length=32), nullable=False),
        sa.Column("terminal_phone", sa.String(length=20), nullable=False),
        sa.Column("terminal_id", sa.String(length=30), nullable=True),
        sa.Column("approval_number", sa.String(length=64), nullable=False),
        sa.Column("approval_valid_until", sa.Date(), nullable=False),
        sa.Column("sealed_cover", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("capacity_m3", sa.Float(), nullable=False),
        sa.Column("auth_code_sha256", sa.String(length=64), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["company_code"], ["companies.code"], name=op.f("fk_trucks_company_code_companies")
        ),
        sa.PrimaryKeyConstraint("plate", name=op.f("pk_trucks")),
        sa.UniqueConstraint("terminal_phone", name=op.f("uq_trucks_terminal_phone")),
    )
    op.create_index("ix_trucks_company", "trucks", ["company_code", "plate"], unique=False)
    op.create_table(
        "drivers",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("company_code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("id_number", sa.String(length=18), nullable=False),
        sa.Column("licence_number", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["company_code"], ["companies.code"], name=op.f("fk_drivers_company_code_companies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drivers")),
        sa.UniqueConstraint("id_number", name=op.f("uq_drivers_id_number")),
    )
    op.create_index("ix_drivers_company", "drivers", ["company_code", "id"], unique=False)
    op.create_table(
        "sites",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("boundary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("permit_number", sa.String(length=64), nullable=False),
        sa.Column("permit_valid_from", sa.Date(), nullable=False),
        sa.Column("permit_valid_until", sa.Date(), nullable=False),
        sa.Column("approved_quantity_m3", sa.Float(), nullable=False),
        sa.Column(
            "gate_cameras", postgresql.ARRAY(sa.String(length=20)), server_default="{}", nullable=False
        ),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_sites")),
    )
    op.create_index("ix_sites_district", "sites", ["district_code", "code"], unique=False)
    op.create_table(
        "routes",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("line", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("width_m", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_routes")),
    )
    op.create_table(
        "transport_areas",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("boundary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("windows", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_transport_areas")),
    )
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
        sa.PrimaryKeyConstraint("plate", "at", "received_at", name="pk_positions"),
        postgresql_partition_by="RANGE (at)",
    )


def downgrade() -> None:
    op.drop_table("positions")
    op.drop_table("transport_areas")
    op.drop_table("routes")
    op.drop_index("ix_sites_district", table_name="sites")
    op.drop_table("sites")
    op.drop_index("ix_drivers_company", table_name="drivers")
    op.drop_table("drivers")
    op.drop_index("ix_trucks_company", table_name="trucks")
    op.drop_table("trucks")
    op.drop_table("companies")
    drop_kit_tables()
