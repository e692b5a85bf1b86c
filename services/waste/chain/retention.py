"""The collection chain's growing tables, each deleted in batches once older than its retention, one
replica a round (the kit's ``purge_tables``, under a lock of its own).

Trips, weighings and violations are a regulator's records, and the weighings the tonnage of every
year reported: five years by default. Pickups and movements are the evidence a trip was assembled
from: 400 days by default, so a year's trips can be looked into; an older trip keeps its sums.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.retention import Purge, purge_tables
from services.waste.chain.models import ChainViolation, Movement, Pickup, TripRow, Weighing

RETENTION_LOCK = 7_745_011
BATCH_SIZE = 5_000
RECORD_DAYS = 5 * 365
EVIDENCE_DAYS = 400


def purges(record_days: int, evidence_days: int) -> list[tuple[Purge, timedelta]]:
    records, evidence = timedelta(days=record_days), timedelta(days=evidence_days)
    return [
        (Purge(Pickup, (Pickup.plate, Pickup.at, Pickup.rfid), Pickup.at), evidence),
        (
            Purge(Movement, (Movement.plate, Movement.at, Movement.kind, Movement.place), Movement.at),
            evidence,
        ),
        (Purge(Weighing, (Weighing.plate, Weighing.at, Weighing.facility_code), Weighing.at), records),
        (Purge(TripRow, (TripRow.id,), TripRow.started_at), records),
        (Purge(ChainViolation, (ChainViolation.id,), ChainViolation.created_at), records),
    ]


async def purge_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    record_days: int = RECORD_DAYS,
    evidence_days: int = EVIDENCE_DAYS,
) -> int:
    """One round; the rows deleted (0 when another replica holds the round)."""
    return await purge_tables(
        sessions, purges(record_days, evidence_days), lock_id=RETENTION_LOCK, batch_size=BATCH_SIZE
    )
