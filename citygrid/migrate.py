"""Alembic for every service: the shared ``env.py`` body, the kit's tables, and programmatic upgrade.

Each service keeps its own history in ``<package>/migrations``; its ``env.py`` is one call to
``run_env``. An advisory lock serialises replicas that start at the same time.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import KitBase
from citygrid.settings import to_asyncpg_url

MIGRATION_LOCK = 7_731_001


def _configure_and_run(connection: Connection, metadata: list[MetaData]) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    # The lock is the session's and outlives this commit; ending the implicit transaction lets
    # Alembic own the migration transaction, so ``autocommit_block()`` works (ALTER TYPE … ADD VALUE).
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()


def run_env(service_metadata: MetaData) -> None:
    """The body of every service's ``env.py``."""
    metadata = [service_metadata, KitBase.metadata]
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (citygrid.migrate.upgrade does)")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def online() -> None:
        engine = create_async_engine(to_asyncpg_url(url))
        try:
            async with engine.connect() as connection:
                await connection.run_sync(_configure_and_run, metadata)
        finally:
            await engine.dispose()

    asyncio.run(online())


def alembic_config(package: str, database_url: str) -> Config:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    config = Config()
    config.set_main_option("script_location", str(Path(module.__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", to_asyncpg_url(database_url).replace("%", "%%"))
    return config


def upgrade(package: str, database_url: str, revision: str = "head") -> None:
    """Migrate one service database (call from synchronous code: Alembic runs its own loop)."""
    command.upgrade(alembic_config(package, database_url), revision)


def create_kit_tables() -> None:
    """Version 1 of the kit's tables; called from each service's first migration."""
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index(
        "ix_outbox_published_at",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_consumer", "dead_letters", ["consumer"])
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def upgrade_outbox_v2() -> None:
    """Version 2 of the outbox: the aggregate of each row (order is kept per aggregate), per-row
    retry time and quarantine. Cheap on a big table: nullable columns, no rewrite."""
    op.add_column("outbox", sa.Column("aggregate_id", sa.String(200), nullable=True))
    op.add_column("outbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL AND quarantined_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_quarantined", "outbox", ["seq"], postgresql_where=sa.text("quarantined_at IS NOT NULL")
    )


def downgrade_outbox_v2() -> None:
    op.drop_index("ix_outbox_quarantined", table_name="outbox")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    for column in ("quarantined_at", "next_attempt_at", "aggregate_id"):
        op.drop_column("outbox", column)


def upgrade_kit_v2() -> None:
    """Version 2 of the kit's tables; called from each service's migration of that name."""
    upgrade_outbox_v2()
    create_inbox_tables_v2()  # last: it builds an index concurrently, committing what came before


def downgrade_kit_v2() -> None:
    drop_inbox_tables_v2()
    downgrade_outbox_v2()


def drop_kit_tables() -> None:
    for table in ("idempotency_keys", "dead_letters", "inbox", "outbox"):
        op.drop_table(table)


def create_inbox_tables_v2() -> None:
    """Version 2 of the consumer side of the kit's tables (``citygrid.inbox``, ``citygrid.retention``):
    the versions mirroring consumers have applied, the failure counts behind ``max_deliver``, and
    the indexes the retention job deletes by.

    Call it last in the migration: the inbox may be large (it was never purged before), so its index
    is built ``CONCURRENTLY``, outside the migration transaction, which commits what ran before it
    and does not block consumers' inserts meanwhile.
    """
    op.create_table(
        "aggregate_versions",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("aggregate_id", sa.String(200), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "aggregate_id", name="pk_aggregate_versions"),
    )
    op.create_index("ix_aggregate_versions_updated_at", "aggregate_versions", ["updated_at"])
    op.create_table(
        "inbox_failures",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox_failures"),
    )
    op.create_index("ix_inbox_failures_updated_at", "inbox_failures", ["updated_at"])
    op.create_index(
        "ix_dead_letters_replayed_at",
        "dead_letters",
        ["replayed_at"],
        postgresql_where=sa.text("replayed_at IS NOT NULL"),
    )
    with op.get_context().autocommit_block():
        # A build that failed half-way leaves an invalid index behind: drop it, then build again.
        op.drop_index("ix_inbox_handled_at", table_name="inbox", postgresql_concurrently=True, if_exists=True)
        op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"], postgresql_concurrently=True)


def drop_inbox_tables_v2() -> None:
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
    op.drop_index("ix_dead_letters_replayed_at", table_name="dead_letters")
    op.drop_table("inbox_failures")
    op.drop_table("aggregate_versions")
