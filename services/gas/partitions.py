"""Monthly partitions of the append-only tables (``scans``, ``fill_checks``), by the kit's ``TimePartitions``.

A scan is accepted up to ``ACCEPT_DAYS_BACK`` days after it happened (a courier's handset that was
offline, an enterprise's EPCIS history), so partitions exist from that far back to
``MONTHS_AHEAD`` months ahead. Records are kept ``retention_days`` (the rules ask for two years at
least; three by default), and a partition entirely older than that is dropped: no row-by-row delete
over tens of millions of scans.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.partitions import TimePartitions

ACCEPT_DAYS_BACK = 400
# The shortest record retention: two years (the rules), and never shorter than scans are accepted.
MINIMUM_RETENTION_DAYS = 730
MONTHS_AHEAD = 3
FUTURE_TOLERANCE = timedelta(minutes=10)  # a handset's clock may run this far ahead

PARTITIONS = TimePartitions(
    ("scans", "fill_checks"),
    "month",
    days_back=ACCEPT_DAYS_BACK,
    periods_ahead=MONTHS_AHEAD,
    lock_id=7_733_001,
)


def partition_name(table: str, month: date) -> str:
    return PARTITIONS.partition_name(table, month)


def accepted_range(today: date) -> tuple[date, date]:
    """The first and the last day a scan's time may fall on (the partitions that exist)."""
    return PARTITIONS.accepted_range(today)


async def ensure_partitions(db: async_sessionmaker[AsyncSession], today: date) -> int:
    """Create the partitions a scan may land in from ``today``; returns how many were created."""
    return await PARTITIONS.ensure(db, today)


async def drop_expired_partitions(
    db: async_sessionmaker[AsyncSession], today: date, retention_days: int
) -> int:
    """Detach and drop every monthly partition wholly older than the retention; returns how many."""
    return await PARTITIONS.drop_expired(db, today, retention_days)
