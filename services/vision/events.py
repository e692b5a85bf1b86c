"""What the vision service publishes (a confirmed alarm, a re-check's verdict) and the case events
it follows: a video case handled → schedule the re-check; closed or cancelled → the alarm is resolved."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from citygrid.db import UnitOfWork, transaction_time
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerSpec
from contract.case import CaseEvent
from contract.common import EvidenceRef, GeoPoint
from contract.vision import AlarmConfirmed, Box, RecheckCompleted
from services.vision.catalogue import ActiveAlgorithm
from services.vision.models import Alarm, AlarmStatus, Camera, Recheck, RecheckStatus

PUBLISHES = "vision"
SNAPSHOT_PATH = "/api/vision/v1/snapshots/"
CASE_CONSUMER = "vision-case-events"
# A merged case lives on in the case it was merged into: its alarm is done (the other alarm's case
# carries the problem and its re-check).
RESOLVING = frozenset(
    {"case.case.closed.v1", "case.case.cancelled.v1", "case.case.rejected.v1", "case.case.merged.v1"}
)


def snapshot_url(sha256: str) -> str:
    return f"{SNAPSHOT_PATH}{sha256}"


def evidence_of(
    sha256: str | None, content_type: str | None, size: int | None, taken_at: datetime | None
) -> list[EvidenceRef]:
    if sha256 is None or content_type is None or not size:
        return []
    return [
        EvidenceRef(
            sha256=sha256,
            content_type=content_type,  # type: ignore[arg-type]
            size_bytes=size,
            url=snapshot_url(sha256),
            taken_at=taken_at,
        )
    ]


def record_confirmed(
    uow: UnitOfWork, alarm: Alarm, camera: Camera, algorithm: ActiveAlgorithm, confirmed_by: str
) -> None:
    """One click (or a precise class) raises the case: the evidence travels as a reference."""
    place = camera.address or camera.name
    uow.publish(
        AlarmConfirmed(
            reference=str(alarm.id),
            category_code=algorithm.category_code,
            district_code=alarm.district_code,
            location=GeoPoint.of(camera.lon, camera.lat),
            address=place[:300],
            description=(
                f"{algorithm.name_en} ({algorithm.name_zh}) seen by camera {camera.name} ({camera.camera_id}), "
                f"{alarm.detections} detection(s), best confidence {alarm.best_confidence:.2f}"
            )[:4000],
            detected_at=alarm.first_seen_at,
            evidence=evidence_of(
                alarm.snapshot_sha256,
                alarm.snapshot_content_type,
                alarm.snapshot_size,
                alarm.snapshot_taken_at,
            ),
            camera_id=alarm.camera_id,
            algorithm_code=alarm.algorithm_code,
            confidence=alarm.best_confidence,
            boxes=[Box(**alarm.best_box)],
            auto_confirmed=alarm.auto_confirmed,
            confirmed_by=confirmed_by[:100],
        ),
        aggregate_id=str(alarm.id),
        version=alarm.version,
    )


def record_recheck(uow: UnitOfWork, recheck: Recheck, note: str | None) -> None:
    assert recheck.checked_at is not None
    uow.publish(
        RecheckCompleted(
            recheck_id=recheck.id,
            alarm_id=recheck.alarm_id,
            case_id=recheck.case_id,
            camera_id=recheck.camera_id,
            algorithm_code=recheck.algorithm_code,
            passed=recheck.status == RecheckStatus.PASSED.value,
            note=note,
            evidence=evidence_of(
                recheck.snapshot_sha256,
                recheck.snapshot_content_type,
                recheck.snapshot_size,
                recheck.checked_at,
            ),
            checked_at=recheck.checked_at,
        ),
        # A re-check is its own aggregate, completed once: its verdict never changes afterwards.
        aggregate_id=str(recheck.id),
        version=1,
    )


def case_consumer(recheck_delay_seconds: float) -> ConsumerSpec:
    async def on_case_event(uow: UnitOfWork, event: CloudEvent) -> None:
        await follow_case(uow, event, recheck_delay_seconds)

    return ConsumerSpec(name=CASE_CONSUMER, domain="case", subject="case.case.>", handler=on_case_event)


async def follow_case(uow: UnitOfWork, event: CloudEvent, recheck_delay_seconds: float) -> None:
    """Cases other services raised are ignored; so are events that name no alarm of ours."""
    data = CaseEvent.model_validate(event.data)
    if data.origin is None or data.origin.service != "vision":
        return
    try:
        alarm_id = uuid.UUID(data.origin.reference)
    except ValueError:
        return
    session = uow.session
    alarm = await session.scalar(select(Alarm).where(Alarm.id == alarm_id).with_for_update())
    if alarm is None:
        return
    if alarm.status == AlarmStatus.RESOLVED.value and event.type not in RESOLVING:
        # A step redelivered after the case ended (a retried "handled" behind "closed") changes
        # nothing: the alarm keeps its final state and no re-check is scheduled for a closed case.
        return
    now = await transaction_time(session)
    assert now is not None
    alarm.case_id = data.case_id
    alarm.case_status = data.status.value
    alarm.updated_at = now
    if event.type == "case.case.handled.v1":
        pending = await session.scalar(
            select(Recheck.id).where(
                Recheck.alarm_id == alarm.id, Recheck.status == RecheckStatus.SCHEDULED.value
            )
        )
        if pending is None:
            session.add(
                Recheck(
                    alarm_id=alarm.id,
                    case_id=data.case_id,
                    camera_id=alarm.camera_id,
                    algorithm_code=alarm.algorithm_code,
                    status=RecheckStatus.SCHEDULED.value,
                    due_at=now + timedelta(seconds=recheck_delay_seconds),
                    attempts=0,
                )
            )
    elif event.type in RESOLVING and alarm.status != AlarmStatus.RESOLVED.value:
        alarm.status = AlarmStatus.RESOLVED.value
        alarm.resolved_at = now
        alarm.version += 1
