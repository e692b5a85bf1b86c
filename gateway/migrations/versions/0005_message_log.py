"""The message log: every call answered for a principal, hash-chained per writer, partitioned by month
of ``at`` (the partitions are made ahead and dropped after retention by the gateway itself), and the
writers' announcements and seals. Rows cannot be updated or deleted through the table (a trigger):
old records go by dropping whole partitions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_log",
        sa.Column("writer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("dataset", sa.String(100), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("query_keys", postgresql.ARRAY(sa.String(64)), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("dropped_before", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("prev_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("writer_id", "seq", "at", name="pk_message_log"),
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("ix_message_log_at", "message_log", ["at", "id"], unique=False)
    op.create_index("ix_message_log_consumer", "message_log", ["consumer", "at", "id"], unique=False)
    op.create_index("ix_message_log_dataset", "message_log", ["dataset", "at", "id"], unique=False)
    op.execute(
        "CREATE FUNCTION message_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'the message log is append-only' USING ERRCODE = 'insufficient_privilege'; END $$"
    )
    op.execute(
        "CREATE TRIGGER message_log_append_only BEFORE UPDATE OR DELETE ON message_log "
        "FOR EACH ROW EXECUTE FUNCTION message_log_append_only()"
    )
    op.create_table(
        "message_log_writers",
        sa.Column("writer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("replica", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("genesis", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seal", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("writer_id", name="pk_message_log_writers"),
    )


def downgrade() -> None:
    op.drop_table("message_log_writers")
    op.drop_table("message_log")
    op.execute("DROP FUNCTION message_log_append_only()")
