"""Monthly partitions of ``message_log``: made ahead, dropped whole once past the retention.

A record's time is when the gateway answered; it reaches the table within seconds (minutes while
the database is down), so partitions exist from a day back to two months ahead.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.partitions import TimePartitions

TABLE = "message_log"
PARTITIONS = TimePartitions((TABLE,), "month", days_back=1, periods_ahead=2, lock_id=7_761_001)

_CHILDREN = text(
    "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = inhrelid "
    "WHERE inhparent = CAST(:table AS regclass) AND NOT inhdetachpending"
)


async def kept_from(sessions: async_sessionmaker[AsyncSession]) -> datetime | None:
    """The start of the oldest partition still there (None: none is): a record older than that
    was dropped by retention, never by anyone else (partitions go whole, oldest first)."""
    async with sessions() as session:
        names = (await session.execute(_CHILDREN, {"table": TABLE})).scalars().all()
    starts = [start for name in names if (start := PARTITIONS.period_of(TABLE, name)) is not None]
    return _midnight(min(starts)) if starts else None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def maintain(sessions: async_sessionmaker[AsyncSession], today: date, retention_days: int) -> int:
    """One round: the partitions ahead made, those past the retention dropped; how many of both."""
    created = await PARTITIONS.ensure(sessions, today)
    dropped = await PARTITIONS.drop_expired(sessions, today, retention_days)
    return created + dropped
