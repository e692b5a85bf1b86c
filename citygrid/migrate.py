"""Alembic for every service: the shared ``env.py`` body, the kit's tables, programmatic upgrade,
and the helpers that change a hot table without locking it (docs/database.md).

Each service keeps its own history in ``<package>/migrations``; its ``env.py`` is one call to
``run_env``. An advisory lock serialises replicas that start at the same time; once it is held, the
run's ``lock_timeout`` and ``statement_timeout`` apply (``MigrationSettings``), so a migration that
cannot get a lock gives up (and the rollout retries it) instead of queueing every request behind it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from citygrid.db import KitBase, milliseconds
from citygrid.settings import MigrationSettings, to_asyncpg_url

MIGRATION_LOCK = 7_731_001
# Where ``upgrade`` hands the run's settings to ``env.py`` (Alembic's Config.attributes), and where
# ``env.py`` leaves them for the helpers below (the connection's info).
SETTINGS_KEY = "citygrid.migration_settings"


def _set_limits(connection: Connection, *, lock_seconds: float, statement_seconds: float) -> None:
    """Session-level (not ``LOCAL``): they hold across the run's transactions and autocommit blocks."""
    for name, seconds in (("lock_timeout", lock_seconds), ("statement_timeout", statement_seconds)):
        connection.execute(
            text("SELECT set_config(:name, :value, false)"), {"name": name, "value": milliseconds(seconds)}
        )


def _configure_and_run(connection: Connection, metadata: list[MetaData], settings: MigrationSettings) -> None:
    # Waiting for another replica's migration is no lock on a table: no limit on this one.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    _set_limits(
        connection,
        lock_seconds=settings.migration_lock_timeout_seconds,
        statement_seconds=settings.migration_statement_timeout_seconds,
    )
    connection.info[SETTINGS_KEY] = settings
    # The lock is the session's and outlives this commit; ending the implicit transaction lets
    # Alembic own the migration transaction, so ``autocommit_block()`` works (ALTER TYPE … ADD VALUE).
    connection.commit()
    try:
        # One transaction per revision: a revision's locks go at its commit, not at the end of the
        # run, and a revision with an autocommit block (which commits what ran before it) starts
        # from a committed, stamped state.
        context.configure(
            connection=connection,
            target_metadata=metadata,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.rollback()  # a failed migration leaves its transaction aborted
        _set_limits(connection, lock_seconds=0, statement_seconds=0)
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()


def run_env(service_metadata: MetaData) -> None:
    """The body of every service's ``env.py``."""
    metadata = [service_metadata, KitBase.metadata]
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (citygrid.migrate.upgrade does)")
    settings = context.config.attributes.get(SETTINGS_KEY) or MigrationSettings()
    if context.is_offline_mode():  # a script for a DBA to run: it sets the same limits first
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        for name, seconds in (
            ("lock_timeout", settings.migration_lock_timeout_seconds),
            ("statement_timeout", settings.migration_statement_timeout_seconds),
        ):
            context.execute(f"SET {name} = {milliseconds(seconds)}")
        with context.begin_transaction():
            context.run_migrations()
        return

    async def online() -> None:
        engine = create_async_engine(to_asyncpg_url(url), hide_parameters=True)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(_configure_and_run, metadata, settings)
        finally:
            await engine.dispose()

    asyncio.run(online())


def alembic_config(package: str, database_url: str, settings: MigrationSettings | None = None) -> Config:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    config = Config()
    config.set_main_option("script_location", str(Path(module.__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", to_asyncpg_url(database_url).replace("%", "%%"))
    if settings is not None:
        config.attributes[SETTINGS_KEY] = settings
    return config


def upgrade(
    package: str, database_url: str, revision: str = "head", settings: MigrationSettings | None = None
) -> None:
    """Migrate one service database (call from synchronous code: Alembic runs its own loop).

    The time limits come from ``settings``, else from the environment (``CITYGRID_MIGRATION_*``).
    """
    command.upgrade(alembic_config(package, database_url, settings), revision)


def _run_settings() -> MigrationSettings:
    found = op.get_bind().info.get(SETTINGS_KEY)
    return found if isinstance(found, MigrationSettings) else MigrationSettings()


@contextmanager
def _concurrent_limits() -> Iterator[None]:
    """The long limit for work that blocks no writer, then the run's limits again.

    A build ``CONCURRENTLY`` takes a lock that conflicts with no reader or writer, then waits for
    the transactions older than it; under the run's short ``lock_timeout`` any slow request would
    fail it.
    """
    settings = _run_settings()
    bind = op.get_bind()
    long = settings.migration_concurrent_timeout_seconds
    _set_limits(bind, lock_seconds=long, statement_seconds=long)
    try:
        yield
    finally:
        _set_limits(
            bind,
            lock_seconds=settings.migration_lock_timeout_seconds,
            statement_seconds=settings.migration_statement_timeout_seconds,
        )


def create_index_concurrently(
    index_name: str, table_name: str, columns: Sequence[str | sa.TextClause], **kw: Any
) -> None:
    """Build an index on a table that already has rows without blocking its writers.

    Runs ``CREATE INDEX CONCURRENTLY`` in an autocommit block, which commits what the migration did
    before it: call it last in a revision (or in a revision of its own). Re-runnable: a valid index
    of that name is kept, an invalid one (a build that failed half-way) is dropped and built again.
    ``kw`` are ``op.create_index``'s (``unique=True``, ``postgresql_where=…``, ``postgresql_include=…``).
    """
    with op.get_context().autocommit_block():
        if not op.get_context().as_sql:
            valid = op.get_bind().scalar(
                text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
                ),
                {"name": index_name},
            )
            if valid:
                return
        with _concurrent_limits() if not op.get_context().as_sql else nullcontext():
            op.drop_index(index_name, table_name=table_name, postgresql_concurrently=True, if_exists=True)
            op.create_index(index_name, table_name, list(columns), postgresql_concurrently=True, **kw)


def create_partitioned_index_concurrently(
    index_name: str,
    parent: str,
    columns: Sequence[str],
    *,
    using: str = "btree",
    storage: Mapping[str, str] | None = None,
) -> None:
    """An index on a partitioned table that has rows, built without blocking its writers.

    PostgreSQL cannot build one CONCURRENTLY on the parent; the way it documents is the index
    ``ON ONLY`` the parent (nothing is built, the lock is brief), then each partition's index built
    CONCURRENTLY and attached; the parent's index is valid once every partition's is. Partitions
    made later get it from the parent. Re-runnable: what is already there is kept.
    """
    names = ", ".join(f'"{column}"' for column in columns)
    options = f" WITH ({', '.join(f'{k} = {v}' for k, v in storage.items())})" if storage else ""
    op.execute(
        f'CREATE INDEX IF NOT EXISTS "{index_name}" ON ONLY "{parent}" USING {using} ({names}){options}'
    )
    if op.get_context().as_sql:
        return
    partitions = (
        op.get_bind()
        .scalars(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent ORDER BY c.relname"
            ),
            {"parent": parent},
        )
        .all()
    )
    for partition in partitions:
        partition_index = f"{partition}_{'_'.join(columns)}_idx"[:63]
        with op.get_context().autocommit_block(), _concurrent_limits():
            op.execute(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{partition_index}" ON "{partition}" '
                f"USING {using} ({names}){options}"
            )
        attached = op.get_bind().scalar(
            text(
                "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE c.relname = :index AND i.inhparent = (:parent_index)::regclass"
            ),
            {"index": partition_index, "parent_index": index_name},
        )
        if not attached:
            op.execute(f'ALTER INDEX "{index_name}" ATTACH PARTITION "{partition_index}"')


def backfill_in_batches(
    table: str,
    *,
    set_: str,
    where: str = "true",
    key: str = "id",
    batch_size: int = 1000,
    parameters: Mapping[str, Any] | None = None,
) -> int:
    """``UPDATE table SET set_ WHERE where`` in batches of ``batch_size`` rows, each its own
    transaction, walking the table in ``key`` order; returns the rows updated.

    No batch holds its row locks for longer than a few milliseconds, and the run's
    ``statement_timeout`` bounds each one. Commits what the migration did before it (an autocommit
    block): give a backfill a revision of its own. ``where`` should leave out the rows already
    done, so a run that failed half-way resumes where it stopped. Rows inserted meanwhile are
    written by the new code, which sets the column itself. ``table``, ``set_``, ``where`` and
    ``key`` are SQL written in the migration, never input; values go in ``parameters``.
    """
    if op.get_context().as_sql:
        raise RuntimeError("a batched backfill reads the rows it updates: run the migration online")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    values = dict(parameters or {})
    updated = 0
    after: Any = None
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        while True:
            bounds: dict[str, Any] = {"citygrid_limit": batch_size}
            keyset = ""
            if after is not None:
                keyset, bounds["citygrid_after"] = f" AND {key} > :citygrid_after", after
            statement = text(
                f"UPDATE {table} SET {set_} WHERE {key} IN ("  # noqa: S608 - the migration's own SQL
                f"SELECT {key} FROM {table} WHERE ({where}){keyset} ORDER BY {key} LIMIT :citygrid_limit"
                f") RETURNING {key}"
            )
            keys = bind.execute(statement, {**values, **bounds}).scalars().all()
            if not keys:
                return updated
            updated += len(keys)
            after = max(keys)


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
