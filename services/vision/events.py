"""What the vision service publishes (a confirmed alarm, a re-check's verdict) and the case events
it follows: a video case handled → schedule the re-check; closed or cancelled → the alarm is resolved."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select

from citygrid.db import UnitOfWork, transaction_time
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerSpec
from citygrid.natsauth import Durable, NatsIdentity
from contract.case import ENDING_EVENT_TYPES, CaseEvent
from contract.common import EvidenceRef, GeoPoint
from contract.vision import AlarmConfirmed, Box, RecheckCompleted
from services.vision.catalogue import ActiveAlgorithm
from services.vision.models import Alarm, AlarmStatus, Camera, Recheck, RecheckStatus

PUBLISHES = "vision"
SNAPSHOT_PATH = "/api/vision/v1/snapshots/"
CASE_CONSUMER = "vision-case-events"
CASE_EVENTS = "case.case.>"
# Engines send detection batches as core NATS requests, each on its own subject
# ``intake.vision.detections.<engine>``; the engine's NATS user may publish only there, so the
# subject names the engine and no engine can speak for another (docs/vision-engines.md).
INTAKE_SUBJECT = "intake.vision.detections"
INTAKE_QUEUE = "vision-intake"
ENGINE_ID = re.compile(r"^[a-z][a-z0-9-]{0,40}$")

# What the vision service does on NATS, and so all it may do (citygrid.natsauth): publish its own
# events, follow case events through one durable consumer, and answer engines' detection batches.
NATS_IDENTITY = NatsIdentity(
    user="vision",
    publishes=PUBLISHES,
    consumes=(Durable("case", CASE_CONSUMER, CASE_EVENTS),),
    subscribe=(f"{INTAKE_SUBJECT}.*",),
    replies=True,
)


def engine_subject(engine: str) -> str:
    return f"{INTAKE_SUBJECT}.{engine}"


def engine_identity(engine: str) -> NatsIdentity:
    """An analysis engine's NATS user: it may send batches on its own intake subject, nothing else."""
    if not ENGINE_ID.match(engine):
        raise ValueError(f"engine id {engine!r}: lowercase letters, digits and '-', starting with a letter")
    return NatsIdentity(user=f"engine-{engine}", publish=(engine_subject(engine),))


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


def raised_by_vision(event: CloudEvent) -> bool:
    """Only cases this service raised concern it: the rest of the city's case events are skipped
    before any database work (no inbox row, no transaction)."""
    origin = event.data.get("origin")
    return isinstance(origin, dict) and origin.get("service") == "vision"


def case_consumer(recheck_delay_seconds: float) -> ConsumerSpec:
    async def on_case_event(uow: UnitOfWork, event: CloudEvent) -> None:
        await follow_case(uow, event, recheck_delay_seconds)

    # The alarm mirrors its case's status: ``mirrors`` applies a case's events only in version
    # order, so a redelivered or late step never overwrites a newer one.
    return ConsumerSpec(
        name=CASE_CONSUMER,
        domain="case",
        subject=CASE_EVENTS,
        handler=on_case_event,
        mirrors=True,
        wants=raised_by_vision,
    )


async def follow_case(uow: UnitOfWork, event: CloudEvent, recheck_delay_seconds: float) -> None:
    """Follow a case this service raised, one version at a time (the consumer's version guard drops
    a step older than one already applied); events that name no alarm of ours are ignored."""
    data = CaseEvent.model_validate(event.data)
    if data.origin is None or data.origin.service != "vision":
        return  # ``wants`` keeps these from the handler; the handler does not rely on it
    try:
        alarm_id = uuid.UUID(data.origin.reference)
    except ValueError:
        return
    session = uow.session
    alarm = await session.scalar(select(Alarm).where(Alarm.id == alarm_id).with_for_update())
    if alarm is None:
        return
    if alarm.status == AlarmStatus.RESOLVED.value and event.type not in ENDING_EVENT_TYPES:
        # A case's final states are final, so the version guard already drops a step redelivered
        # after the case ended (a retried "handled" behind "closed"). This covers what it cannot
        # see: an event without ``aggregateversion`` (published before versions existed, still in
        # the stream) and a version row gone with the retention. The alarm keeps its final state
        # and no re-check is scheduled for a closed case.
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
    elif event.type in ENDING_EVENT_TYPES and alarm.status != AlarmStatus.RESOLVED.value:
        alarm.status = AlarmStatus.RESOLVED.value
        alarm.resolved_at = now
        alarm.version += 1
