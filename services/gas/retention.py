"""The gas service's growing tables beyond the partitioned ones, each deleted in batches once older
than its retention (the kit's ``Purge``; one replica a round, under an advisory lock).

Scans and fill checks go by partition (``partitions``); the daily violation counters by
``figures.expire_violations``. What is here: anomalies, the events kept whole and the captured
event ids (as long as the scans they belong with), the stations' lock audit trail (as long as
scans), capture jobs (a quarter: a client reads its job's outcome soon after the capture), and the
safety records kept five years: household inspections with their hazards, outreach activities, and
closed leak incidents with their steps (an open incident is never deleted).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.retention import Purge, purge_tables
from services.gas.models import (
    Anomaly,
    CaptureJob,
    EpcisEventId,
    EpcisForeignEvent,
    Hazard,
    Incident,
    IncidentStepRecord,
    OutreachActivity,
    SafetyInspection,
    StationLock,
)

log = logging.getLogger("services.gas.retention")

RETENTION_LOCK = 7_733_003
BATCH_SIZE = 5_000
CAPTURE_JOB_DAYS = 90
SAFETY_RECORD_DAYS = 5 * 365


def purges(record_days: int) -> list[tuple[Purge, timedelta]]:
    records = timedelta(days=record_days)
    safety = timedelta(days=SAFETY_RECORD_DAYS)
    # The same cutoff as the round's (``now()`` is the transaction's time).
    incident_closed_long_ago: ColumnElement[bool] = (
        select(Incident.id)
        .where(Incident.id == IncidentStepRecord.incident_id, Incident.closed_at < func.now() - safety)
        .exists()
    )
    return [
        (Purge(Anomaly, (Anomaly.id,), Anomaly.detected_at), records),
        (Purge(EpcisForeignEvent, (EpcisForeignEvent.event_id,), EpcisForeignEvent.recorded_at), records),
        (Purge(EpcisEventId, (EpcisEventId.event_id,), EpcisEventId.captured_at), records),
        (Purge(StationLock, (StationLock.id,), StationLock.at), records),
        (Purge(CaptureJob, (CaptureJob.id,), CaptureJob.created_at), timedelta(days=CAPTURE_JOB_DAYS)),
        # A hazard goes once rectified long enough ago (an open one is work still to do); an
        # inspection once old and without hazards left (the foreign key).
        (
            Purge(Hazard, (Hazard.id,), Hazard.rectified_at, Hazard.rectified_at.is_not(None)),
            safety,
        ),
        (
            Purge(
                SafetyInspection,
                (SafetyInspection.id,),
                SafetyInspection.inspected_at,
                ~select(Hazard.id).where(Hazard.inspection_id == SafetyInspection.id).exists(),
            ),
            safety,
        ),
        (Purge(OutreachActivity, (OutreachActivity.id,), OutreachActivity.created_at), safety),
        # An incident's steps go with it: first the steps of one closed long ago, then the incident
        # once none is left (the foreign key), in this round or the next.
        (
            Purge(
                IncidentStepRecord, (IncidentStepRecord.id,), IncidentStepRecord.at, incident_closed_long_ago
            ),
            safety,
        ),
        (
            Purge(
                Incident,
                (Incident.id,),
                Incident.closed_at,
                ~select(IncidentStepRecord.id).where(IncidentStepRecord.incident_id == Incident.id).exists(),
            ),
            safety,
        ),
    ]


async def purge_once(sessions: async_sessionmaker[AsyncSession], *, record_days: int) -> int:
    """One round; returns the rows deleted (0 when another replica holds the round)."""
    return await purge_tables(sessions, purges(record_days), lock_id=RETENTION_LOCK, batch_size=BATCH_SIZE)
