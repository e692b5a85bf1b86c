"""Bounded kit tables: a periodic job deletes what the kit no longer needs, oldest first.

What goes, once older than the retention:

| table | rows | by |
|---|---|---|
| ``inbox`` | every row | ``handled_at`` |
| ``aggregate_versions`` | every row | ``updated_at`` |
| ``inbox_failures`` | every row | ``updated_at`` |
| ``idempotency_keys`` | every row | ``created_at`` |
| ``outbox`` | published rows only | ``published_at`` |
| ``dead_letters`` | replayed letters only | ``replayed_at`` |

**The retention rule:** at least the stream's max age (14 days, ``nats_stream_max_age_seconds``)
plus a replay horizon; ``kit_retention_days`` defaults to 30. An inbox row must outlive every copy
of its event the stream can still deliver, or a redelivery (a durable recreated from the start, a
consumer renamed) would be handled twice; an applied version must outlive every older event of its
aggregate that could still arrive, including a dead letter replayed weeks later; an idempotency key
covers a client's retries for as long. Pending dead letters and unpublished (or quarantined) outbox
rows are never deleted: they are work still to do.

Every replica runs the job and it happens once: each round takes a transaction-level advisory lock
with ``pg_try_advisory_xact_lock`` inside the delete transaction, so a second replica finds it taken
and deletes nothing. A round deletes at most ``batch_size`` rows per table, chosen by the time index
and deleted by primary key; a full batch makes ``run_forever`` start the next round at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Delete, delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute

from citygrid.idempotency import StoredResponse
from citygrid.inbox import AggregateVersion, DeadLetter, InboxEntry, InboxFailure
from citygrid.jobs import PeriodicJob
from citygrid.outbox import OutboxMessage

log = logging.getLogger("citygrid.retention")

# pg_try_advisory_xact_lock key of the retention job (one database per service: one lock per service).
RETENTION_LOCK = 7_731_003
BATCH_SIZE = 5_000
STREAM_MAX_AGE = timedelta(days=14)
# A round never waits long on a row lock (a replay in progress): it gives up and the next one retries.
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class Purge:
    """One table's old rows: ``age`` (indexed) before the cutoff and, if given, ``only``. The kit's
    tables are listed below; a service lists its own growing tables the same way."""

    table: type[DeclarativeBase]
    key: Sequence[InstrumentedAttribute[object]]
    age: InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None]
    only: ColumnElement[bool] | None = None

    @property
    def name(self) -> str:
        return str(self.table.__tablename__)

    def statement(self, cutoff: datetime | ColumnElement[datetime], batch_size: int) -> Delete:
        old = select(*self.key).where(self.age < cutoff)
        if self.only is not None:
            old = old.where(self.only)
        oldest = old.order_by(self.age).limit(batch_size)
        return delete(self.table).where(tuple_(*self.key).in_(oldest))


PURGES: tuple[Purge, ...] = (
    Purge(InboxEntry, (InboxEntry.consumer, InboxEntry.event_id), InboxEntry.handled_at),
    Purge(
        AggregateVersion,
        (AggregateVersion.consumer, AggregateVersion.aggregate_id),
        AggregateVersion.updated_at,
    ),
    Purge(InboxFailure, (InboxFailure.consumer, InboxFailure.event_id), InboxFailure.updated_at),
    Purge(StoredResponse, (StoredResponse.principal, StoredResponse.key), StoredResponse.created_at),
    # ``published_at < cutoff`` implies NOT NULL, which the partial index needs; said anyway.
    Purge(
        OutboxMessage,
        (OutboxMessage.seq,),
        OutboxMessage.published_at,
        OutboxMessage.published_at.is_not(None),
    ),
    Purge(DeadLetter, (DeadLetter.id,), DeadLetter.replayed_at, DeadLetter.replayed_at.is_not(None)),
)


async def purge_once(
    sessions: async_sessionmaker[AsyncSession], *, retention: timedelta, batch_size: int = BATCH_SIZE
) -> dict[str, int]:
    """One round: rows deleted per table, or ``{}`` when another replica holds the round's lock."""
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(RETENTION_LOCK))):
            return {}
        await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        # One cutoff, on the database's clock, for every table of the round.
        cutoff = (await session.execute(select(func.now() - retention))).scalar_one()
        deleted: dict[str, int] = {}
        for purge in PURGES:
            result = await session.execute(purge.statement(cutoff, batch_size))
            deleted[purge.name] = int(getattr(result, "rowcount", 0) or 0)
    if any(deleted.values()):
        log.info(
            "retention: deleted %s (older than %s)",
            ", ".join(f"{count} {name}" for name, count in deleted.items() if count),
            retention,
        )
    return deleted


async def purge_tables(
    sessions: async_sessionmaker[AsyncSession],
    purges: Sequence[tuple[Purge, timedelta]],
    *,
    lock_id: int,
    batch_size: int = BATCH_SIZE,
) -> int:
    """One round over a service's own tables, each with its retention; the rows deleted (0 when
    another replica holds the round's advisory lock ``lock_id``)."""
    deleted = 0
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock_id))):
            return 0
        await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        now = (await session.execute(select(func.now()))).scalar_one()
        for purge, retention in purges:
            result = await session.execute(purge.statement(now - retention, batch_size))
            deleted += int(getattr(result, "rowcount", 0) or 0)
    if deleted:
        log.info("retention: deleted %d rows of the service's own tables", deleted)
    return deleted


def retention_job(
    sessions: async_sessionmaker[AsyncSession],
    *,
    retention: timedelta,
    batch_size: int = BATCH_SIZE,
    every_seconds: float = 600.0,
    stream_max_age: timedelta = STREAM_MAX_AGE,
) -> PeriodicJob:
    """The kit's retention as a ``PeriodicJob`` whose ``run`` returns the rows it deleted.

    Refuses a retention shorter than the stream keeps events (see the module's rule).
    """
    if retention < stream_max_age:
        raise ValueError(
            f"a retention of {retention} is shorter than the stream's max age {stream_max_age}: "
            "a redelivered event would find no inbox row and be handled again"
        )

    async def run() -> int:
        # The sum reaches batch_size whenever one table's batch was full: run_forever goes again.
        return sum((await purge_once(sessions, retention=retention, batch_size=batch_size)).values())

    return PeriodicJob(name="kit-retention", every_seconds=every_seconds, run=run, batch_size=batch_size)
