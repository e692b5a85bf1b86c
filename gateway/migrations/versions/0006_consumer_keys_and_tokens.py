"""Consumers with their kind and contact, several keys each, the log of credential changes every
replica follows, the audit of changes, and the gateway's token-signing keys.

Each consumer's one key moves to ``consumer_keys`` (the same prefix and hash: keys already issued go
on working), then the columns that held it go.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_consumers", sa.Column("kind", sa.String(24), server_default="system", nullable=False))
    op.add_column("api_consumers", sa.Column("contact_name", sa.String(100), nullable=True))
    op.add_column("api_consumers", sa.Column("contact_phone", sa.String(32), nullable=True))
    op.add_column("api_consumers", sa.Column("contact_email", sa.String(254), nullable=True))
    op.add_column(
        "api_consumers",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "consumer_keys",
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("consumer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["consumer_id"],
            ["api_consumers.id"],
            name="fk_consumer_keys_consumer_id_api_consumers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("prefix", name="pk_consumer_keys"),
    )
    op.create_index("ix_consumer_keys_consumer", "consumer_keys", ["consumer_id", "created_at"])
    op.execute(
        "INSERT INTO consumer_keys (prefix, consumer_id, key_hash, label, created_at) "
        "SELECT key_prefix, id, key_hash, 'first', created_at FROM api_consumers"
    )
    op.drop_constraint("uq_api_consumers_key_prefix", "api_consumers", type_="unique")
    op.drop_column("api_consumers", "key_prefix")
    op.drop_column("api_consumers", "key_hash")
    op.create_table(
        "credential_changes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("consumer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("key_prefix", sa.String(16), nullable=True),
        sa.Column("kind", sa.String(24), server_default="grants_changed", nullable=False),
        sa.Column(
            "txid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id()::text)::bigint"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_credential_changes"),
    )
    op.create_index("ix_credential_changes_at", "credential_changes", ["at"])
    op.create_index("ix_credential_changes_txid", "credential_changes", ["txid"])
    op.create_table(
        "consumer_audit",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("consumer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consumer_audit"),
    )
    op.create_index("ix_consumer_audit_consumer", "consumer_audit", ["consumer_id", "at", "id"])
    # The audit is append-only: the database refuses to change a record, or to remove one before the
    # shortest retention (a year) is over.
    op.execute(
        "CREATE FUNCTION consumer_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF TG_OP = 'DELETE' AND OLD.at < now() - interval '365 days' THEN RETURN OLD; END IF; "
        "RAISE EXCEPTION 'consumer_audit is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER consumer_audit_append_only BEFORE UPDATE OR DELETE ON consumer_audit "
        "FOR EACH ROW EXECUTE FUNCTION consumer_audit_append_only()"
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(32), nullable=False),
        sa.Column("private_pem", sa.String(2000), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("signs_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.execute("DROP TRIGGER consumer_audit_append_only ON consumer_audit")
    op.execute("DROP FUNCTION consumer_audit_append_only()")
    op.drop_table("consumer_audit")
    op.drop_index("ix_credential_changes_at", table_name="credential_changes")
    op.drop_table("credential_changes")
    op.add_column("api_consumers", sa.Column("key_prefix", sa.String(16), nullable=True))
    op.add_column("api_consumers", sa.Column("key_hash", sa.String(64), nullable=True))
    # Each consumer keeps its oldest live key.
    op.execute(
        "UPDATE api_consumers c SET key_prefix = k.prefix, key_hash = k.key_hash FROM ("
        "SELECT DISTINCT ON (consumer_id) consumer_id, prefix, key_hash FROM consumer_keys "
        "WHERE revoked_at IS NULL ORDER BY consumer_id, created_at) k WHERE k.consumer_id = c.id"
    )
    op.execute("DELETE FROM api_consumers WHERE key_prefix IS NULL")
    op.alter_column("api_consumers", "key_prefix", nullable=False)
    op.alter_column("api_consumers", "key_hash", nullable=False)
    op.create_unique_constraint("uq_api_consumers_key_prefix", "api_consumers", ["key_prefix"])
    op.drop_index("ix_consumer_keys_consumer", table_name="consumer_keys")
    op.drop_table("consumer_keys")
    for column in ("updated_at", "contact_email", "contact_phone", "contact_name", "kind"):
        op.drop_column("api_consumers", column)
