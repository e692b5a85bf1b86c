"""The muck service's growing tables beyond ``positions`` (dropped by partition), each deleted in
batches once older than its retention, one replica a round (the kit's ``purge_tables``).

Violations and finished manifests are a regulator's records: five years by default. A manifest's
steps go with it; a manifest still open is never deleted, however old.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.retention import Purge, purge_tables
from services.muck.models import ManifestRow, Violation

RETENTION_LOCK = 7_744_004
BATCH_SIZE = 5_000
RECORD_DAYS = 5 * 365


def purges(record_days: int) -> list[tuple[Purge, timedelta]]:
    records = timedelta(days=record_days)
    return [
        (Purge(Violation, (Violation.id,), Violation.created_at), records),
        # A finished manifest goes with its steps (ON DELETE CASCADE), by when it finished.
        (
            Purge(ManifestRow, (ManifestRow.id,), ManifestRow.closed_at, ManifestRow.closed_at.is_not(None)),
            records,
        ),
    ]


async def purge_once(sessions: async_sessionmaker[AsyncSession], *, record_days: int = RECORD_DAYS) -> int:
    """One round; the rows deleted (0 when another replica holds the round)."""
    return await purge_tables(sessions, purges(record_days), lock_id=RETENTION_LOCK, batch_size=BATCH_SIZE)
