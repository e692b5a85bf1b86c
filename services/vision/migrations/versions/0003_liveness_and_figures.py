"""Camera liveness apart from the registry, the fleet's review figures, and the time indexes of
the review analytics.

- ``camera_liveness`` (camera, last heartbeat): heartbeats update this narrow row in place (HOT)
  instead of the ``cameras`` row and its six indexes. The heartbeats recorded so far are copied
  over in batches of ``BACKFILL_BATCH`` cameras, each its own transaction, reading ``cameras`` by
  its primary key and writing nothing to it.
- ``fleet_gauges``: the review figures one replica computes for all.
- ``ix_reviews_at`` (BRIN) and ``ix_alarms_raised`` (B-tree, partial), built ``CONCURRENTLY``
  so neither table is locked against writes while they build.

Re-runnable from any point it failed at: the tables are created if missing, a backfill batch never
overwrites a newer heartbeat, and a valid index is kept (an invalid one is built again).

Expand only: ``cameras.last_heartbeat_at`` and ``ix_cameras_heartbeat`` stay, because replicas of
the previous release keep writing and sweeping them during the rolling update. A migration of a
later release drops both.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from citygrid.migrate import create_index_concurrently

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BACKFILL_BATCH = 5_000
LIVENESS_FILLFACTOR = 50  # why: services/vision/models.py

# The next batch of recorded heartbeats after :after, by primary key. A heartbeat a new replica
# recorded meanwhile is never overwritten by an older one of the registry row.
BACKFILL = sa.text(
    "INSERT INTO camera_liveness (camera_id, last_heartbeat_at) "
    "SELECT camera_id, last_heartbeat_at FROM cameras "
    "WHERE camera_id > :after AND last_heartbeat_at IS NOT NULL "
    "ORDER BY camera_id LIMIT :batch "
    "ON CONFLICT (camera_id) DO UPDATE SET last_heartbeat_at = "
    "GREATEST(camera_liveness.last_heartbeat_at, EXCLUDED.last_heartbeat_at) "
    "RETURNING camera_id"
)
# The way back: the registry row gets the newest heartbeat again, a batch at a time.
COPY_BACK = sa.text(
    "WITH batch AS (SELECT camera_id, last_heartbeat_at FROM camera_liveness "
    "WHERE camera_id > :after ORDER BY camera_id LIMIT :batch), "
    "changed AS (UPDATE cameras c SET last_heartbeat_at = b.last_heartbeat_at FROM batch b "
    "WHERE c.camera_id = b.camera_id "
    "AND (c.last_heartbeat_at IS NULL OR c.last_heartbeat_at < b.last_heartbeat_at)) "
    "SELECT max(camera_id) FROM batch"
)


def upgrade() -> None:
    op.create_table(
        "camera_liveness",
        sa.Column("camera_id", sa.String(20), nullable=False),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["cameras.camera_id"],
            name="fk_camera_liveness_camera_id_cameras",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("camera_id", name="pk_camera_liveness"),
        postgresql_with={"fillfactor": LIVENESS_FILLFACTOR},
        if_not_exists=True,
    )
    op.create_table(
        "fleet_gauges",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("queue_oldest_raised_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("auto_dispatch_ratio", sa.Float(), nullable=False),
        sa.Column("false_positive_ratio", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fleet_gauges"),
        if_not_exists=True,
    )
    # Everything below runs outside the migration transaction (which commits the tables above):
    # each backfill batch commits on its own (the run's statement and lock limits bound each), and
    # the indexes build without blocking writes.
    with op.get_context().autocommit_block():
        connection = op.get_bind()
        after = ""
        while True:
            copied = connection.execute(BACKFILL, {"after": after, "batch": BACKFILL_BATCH}).scalars().all()
            if not copied:
                break
            after = max(copied)
    create_index_concurrently(
        "ix_reviews_at", "reviews", ["at"], postgresql_using="brin", postgresql_with={"autosummarize": "on"}
    )
    create_index_concurrently(
        "ix_alarms_raised", "alarms", ["raised_at", "id"], postgresql_where=sa.text("raised_at IS NOT NULL")
    )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        connection = op.get_bind()
        after = ""
        while True:
            last = connection.execute(COPY_BACK, {"after": after, "batch": BACKFILL_BATCH}).scalar()
            if last is None:
                break
            after = last
        op.drop_index("ix_alarms_raised", table_name="alarms", postgresql_concurrently=True, if_exists=True)
        op.drop_index("ix_reviews_at", table_name="reviews", postgresql_concurrently=True, if_exists=True)
    op.drop_table("fleet_gauges")
    op.drop_table("camera_liveness")
