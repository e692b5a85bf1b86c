"""Electronic manifests and their steps, transport violations with their evidence, the transport
rules' cursor, and the transaction id of each stored position the rules read by.

``positions.txid`` is added without rewriting the table: the default applies to rows stored from now
on, rows stored before keep NULL and are not evaluated. Its BRIN index (a few pages per partition)
is built on each partition concurrently.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.migrate import create_partitioned_index_concurrently

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNDELIVERED = sa.text("status IN ('issued', 'loaded', 'in_transit')")


def upgrade() -> None:
    now = sa.func.now()
    op.add_column("positions", sa.Column("txid", sa.BigInteger(), nullable=True))
    op.alter_column("positions", "txid", server_default=sa.text("(pg_current_xact_id()::text)::bigint"))
    op.create_table(
        "manifests",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("company_code", sa.String(length=32), nullable=False),
        sa.Column("driver_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("origin_site", sa.String(length=32), nullable=False),
        sa.Column("disposal_site", sa.String(length=32), nullable=False),
        sa.Column("district_code", sa.String(length=6), nullable=False),
        sa.Column("route_code", sa.String(length=32), nullable=True),
        sa.Column("waste_type", sa.String(length=32), nullable=False),
        sa.Column("declared_quantity_m3", sa.Float(), nullable=False),
        sa.Column("received_quantity_m3", sa.Float(), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("abnormal_reason", sa.String(length=32), nullable=True),
        sa.Column("resolution_note", sa.String(length=2000), nullable=True),
        sa.Column("issued_by", sa.String(length=100), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(["plate"], ["trucks.plate"], name=op.f("fk_manifests_plate_trucks")),
        sa.ForeignKeyConstraint(
            ["company_code"], ["companies.code"], name=op.f("fk_manifests_company_code_companies")
        ),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.id"], name=op.f("fk_manifests_driver_id_drivers")),
        sa.ForeignKeyConstraint(["origin_site"], ["sites.code"], name=op.f("fk_manifests_origin_site_sites")),
        sa.ForeignKeyConstraint(
            ["disposal_site"], ["sites.code"], name=op.f("fk_manifests_disposal_site_sites")
        ),
        sa.ForeignKeyConstraint(["route_code"], ["routes.code"], name=op.f("fk_manifests_route_code_routes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifests")),
        sa.UniqueConstraint("number", name=op.f("uq_manifests_number")),
    )
    op.create_index(
        "uq_manifests_undelivered_plate", "manifests", ["plate"], unique=True, postgresql_where=UNDELIVERED
    )
    op.create_index("ix_manifests_site_issued", "manifests", ["origin_site", "issued_at", "id"])
    op.create_index("ix_manifests_district_issued", "manifests", ["district_code", "issued_at", "id"])
    op.create_index("ix_manifests_company_issued", "manifests", ["company_code", "issued_at", "id"])
    op.create_index(
        "ix_manifests_undelivered_window", "manifests", ["window_end"], postgresql_where=UNDELIVERED
    )
    op.create_index(
        "ix_manifests_closed", "manifests", ["closed_at"], postgresql_where=sa.text("closed_at IS NOT NULL")
    )
    op.create_table(
        "manifest_steps",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("manifest_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("detail", sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name=op.f("fk_manifest_steps_manifest_id_manifests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifest_steps")),
    )
    op.create_index("ix_manifest_steps_manifest", "manifest_steps", ["manifest_id", "id"])
    op.create_table(
        "violations",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("plate", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("episode_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("manifest_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("manifest_number", sa.String(length=32), nullable=True),
        sa.Column("company_code", sa.String(length=32), nullable=True),
        sa.Column("district_code", sa.String(length=6), nullable=True),
        sa.Column("track", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("track_sha256", sa.String(length=64), nullable=True),
        sa.Column("snapshots", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
        sa.Column("source_alarm", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_violations")),
        sa.UniqueConstraint("plate", "kind", "episode_started_at", name="uq_violations_episode"),
        sa.UniqueConstraint("source_alarm", name=op.f("uq_violations_source_alarm")),
    )
    op.create_index("ix_violations_district_at", "violations", ["district_code", "at", "id"])
    op.create_index("ix_violations_plate_at", "violations", ["plate", "at", "id"])
    op.create_index("ix_violations_at", "violations", ["at", "id"])
    op.create_index("ix_violations_created", "violations", ["created_at"])
    op.create_table(
        "rule_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("horizon", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rule_cursor")),
    )
    # Last: it commits what came before (each partition's index is built concurrently).
    create_partitioned_index_concurrently("ix_positions_txid", "positions", ["txid"], using="brin")


def downgrade() -> None:
    op.drop_table("rule_cursor")
    op.drop_table("violations")
    op.drop_table("manifest_steps")
    op.drop_table("manifests")
    op.drop_index("ix_positions_txid", table_name="positions")
    op.drop_column("positions", "txid")
