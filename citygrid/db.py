"""Database plumbing: naming convention, engine and session factory, and the unit of work.

The unit of work is the only commit point of a service: HTTP handlers and event handlers both open
one, the domain records events on it, and they are written to the outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from citygrid.events import CloudEvent, EventData, envelope
from citygrid.settings import ServiceSettings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


class KitBase(DeclarativeBase):
    """Tables the kit keeps in every service database (outbox, inbox, dead letters, idempotency)."""

    metadata = make_metadata()


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": settings.service_name, "timezone": "UTC"}},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def transaction_time(session: AsyncSession) -> datetime:
    """The database's time at the start of this transaction: one clock for every replica, and the
    same instant for every row the transaction writes."""
    return (await session.execute(select(func.now()))).scalar_one()


@dataclass
class UnitOfWork:
    """One transaction. ``publish`` queues an event; ``unit_of_work`` writes it to the outbox."""

    session: AsyncSession
    source: str
    traceparent: str | None = None
    pending_events: list[CloudEvent] = field(default_factory=list)
    events_written: int = 0

    def publish(self, data: EventData, *, aggregate_id: str, version: int) -> CloudEvent:
        """Queue ``data`` as an event of aggregate ``aggregate_id`` at its ``version`` after the change."""
        event = envelope(
            data,
            source=self.source,
            aggregate_id=aggregate_id,
            aggregate_version=version,
            traceparent=self.traceparent,
        )
        self.pending_events.append(event)
        return event

    async def flush_events(self) -> None:
        if not self.pending_events:
            return
        # Imported here: the outbox model imports this module for KitBase.
        from citygrid.outbox import outbox_rows

        await self.session.execute(outbox_rows(self.pending_events))
        # No NOTIFY: it takes a server-wide lock from pre-commit to commit and serialises every
        # event-producing commit (docs/architecture.md has the figures). Relays poll instead, and
        # this process's relay is woken after the commit.
        self.events_written += len(self.pending_events)
        self.pending_events.clear()


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
    *,
    source: str,
    traceparent: str | None = None,
    on_events_committed: Callable[[], None] | None = None,
) -> AsyncIterator[UnitOfWork]:
    """Open a transaction; commit it with its events when the block ends, roll back on error.

    ``on_events_committed`` runs after a commit that wrote events (the relay's wake-up call).
    """
    async with sessions() as session, session.begin():
        uow = UnitOfWork(session=session, source=source, traceparent=traceparent)
        yield uow
        await uow.flush_events()
    if uow.events_written and on_events_committed is not None:
        on_events_committed()
