"""The gas service's growing tables beyond the partitioned ones, each deleted in batches once older
than its retention (the kit's ``Purge``; one replica a round, under an advisory lock).

Scans and fill checks go by partition (``partitions``); the daily violation counters by
``figures.expire_violations``. What is here: anomalies, the events kept whole and the captured
event ids (as long as the scans they belong with), capture jobs (a quarter: a client reads its
job's outcome soon after the capture), and household inspections with their hazards (the records
of a five-year safety programme).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.retention import LOCK_TIMEOUT, Purge
from services.gas.models import Anomaly, CaptureJob, EpcisEventId, EpcisForeignEvent, Hazard, SafetyInspection

log = logging.getLogger("services.gas.retention")

RETENTION_LOCK = 7_733_003
BATCH_SIZE = 5_000
CAPTURE_JOB_DAYS = 90
INSPECTION_DAYS = 5 * 365


def purges(record_days: int) -> list[tuple[Purge, timedelta]]:
    records = timedelta(days=record_days)
    return [
        (Purge(Anomaly, (Anomaly.id,), Anomaly.detected_at), records),
        (Purge(EpcisForeignEvent, (EpcisForeignEvent.event_id,), EpcisForeignEvent.recorded_at), records),
        (Purge(EpcisEventId, (EpcisEventId.event_id,), EpcisEventId.captured_at), records),
        (Purge(CaptureJob, (CaptureJob.id,), CaptureJob.created_at), timedelta(days=CAPTURE_JOB_DAYS)),
        # A hazard goes once rectified long enough ago (an open one is work still to do); an
        # inspection once old and without hazards left (the foreign key).
        (
            Purge(Hazard, (Hazard.id,), Hazard.rectified_at, Hazard.rectified_at.is_not(None)),
            timedelta(days=INSPECTION_DAYS),
        ),
        (
            Purge(
                SafetyInspection,
                (SafetyInspection.id,),
                SafetyInspection.inspected_at,
                ~select(Hazard.id).where(Hazard.inspection_id == SafetyInspection.id).exists(),
            ),
            timedelta(days=INSPECTION_DAYS),
        ),
    ]


async def purge_once(sessions: async_sessionmaker[AsyncSession], *, record_days: int) -> int:
    """One round; returns the rows deleted (0 when another replica holds the round)."""
    deleted = 0
    async with sessions() as session, session.begin():
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(RETENTION_LOCK))):
            return 0
        await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        now = (await session.execute(select(func.now()))).scalar_one()
        for purge, retention in purges(record_days):
            result = await session.execute(purge.statement(now - retention, BATCH_SIZE))
            deleted += int(getattr(result, "rowcount", 0) or 0)
    if deleted:
        log.info("retention: deleted %d rows", deleted)
    return deleted
