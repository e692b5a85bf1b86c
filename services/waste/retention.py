"""The waste service's growing tables, each deleted in batches once older than its retention, one
replica a round (the kit's ``purge_tables``).

Violations are a regulator's records: five years by default. The AI boxes' events are the intake's
log, kept long enough to answer a box that sends a batch again (and to look into a disputed
violation): 90 days by default.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.retention import Purge, purge_tables
from services.waste.models import BinEvent, Violation

RETENTION_LOCK = 7_745_004
BATCH_SIZE = 5_000
RECORD_DAYS = 5 * 365
BIN_EVENT_DAYS = 90


def purges(record_days: int, bin_event_days: int) -> list[tuple[Purge, timedelta]]:
    return [
        (Purge(Violation, (Violation.id,), Violation.created_at), timedelta(days=record_days)),
        (
            Purge(BinEvent, (BinEvent.point_code, BinEvent.event_id), BinEvent.received_at),
            timedelta(days=bin_event_days),
        ),
    ]


async def purge_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    record_days: int = RECORD_DAYS,
    bin_event_days: int = BIN_EVENT_DAYS,
) -> int:
    """One round; the rows deleted (0 when another replica holds the round)."""
    return await purge_tables(
        sessions, purges(record_days, bin_event_days), lock_id=RETENTION_LOCK, batch_size=BATCH_SIZE
    )
