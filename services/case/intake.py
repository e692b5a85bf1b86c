"""Cases raised by other services' events, and the AI re-check that closes or reworks a handled case.

Each consumer is a plain function run by the kit's inbox, so an event id is handled once; the
case's origin (service, reference) is unique, so the same record republished under a new event id
still opens one case. An event the case service cannot take (unknown category, no district, a
re-check of a case that does not exist) raises a ``DomainError`` and is dead-lettered at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.errors import InvalidInput
from citygrid.events import CloudEvent, EventData
from citygrid.inbox import ConsumerSpec, Handler
from contract import gas, muck, vision, waste
from contract.case import CaseSource, CaseStatus
from contract.common import EvidenceRef, Origin, ProblemDetected
from services.case import service
from services.case.catalogue import CalendarHolder
from services.case.domain.workflow import Action, Role
from services.case.grid_store import GridHolder
from services.case.models import Case, CaseEvidence, CaseHistory
from services.case.schemas import ReportCase

log = logging.getLogger("citygrid.case.intake")

OriginService = Literal["vision", "gas", "muck", "waste"]
Payload = TypeVar("Payload", bound=EventData)

# Registers what other services raise; the raising service itself is the reporter.
INTAKE = Principal(
    subject="system:intake", kind="service", name="automatic intake", roles=frozenset({Role.SYSTEM.value})
)
RECHECK = Principal(
    subject="service:vision", kind="service", name="AI re-check", roles=frozenset({Role.SYSTEM.value})
)


def reporter(service_name: OriginService) -> Principal:
    return Principal(
        subject=f"service:{service_name}",
        kind="service",
        name=service_name,
        roles=frozenset({Role.SYSTEM.value}),
    )


class InvalidEvent(InvalidInput):
    code = "case.intake.invalid_event"
    title = "Invalid event"


class DistrictUnknown(InvalidInput):
    code = "case.intake.district_unknown"
    title = "District unknown"


class RaisedCase(ReportCase):
    """A report made by another service: the one kind of report that may carry ``system``."""

    source: CaseSource


@dataclass(frozen=True)
class Intake:
    """One kind of problem another service raises, and the source its cases carry."""

    service: OriginService
    event: type[ProblemDetected]
    source: CaseSource


INTAKES: tuple[Intake, ...] = (
    Intake("vision", vision.AlarmConfirmed, CaseSource.VIDEO),
    Intake("gas", gas.ViolationDetected, CaseSource.SYSTEM),
    Intake("gas", gas.IncidentReported, CaseSource.SYSTEM),
    Intake("muck", muck.ViolationDetected, CaseSource.SYSTEM),
    Intake("waste", waste.ViolationDetected, CaseSource.SYSTEM),
)


def consumer_name(event: type[EventData]) -> str:
    """The durable consumer of one event type: ``case-vision-alarm-confirmed``."""
    return "case-" + event.subject.replace(".", "-")


def parse(event: CloudEvent, model: type[Payload]) -> Payload:
    if event.type != model.event_type():
        raise InvalidEvent(f"event {event.id} is a {event.type}; this consumer reads {model.event_type()}")
    try:
        return model.from_envelope(event)
    except ValidationError as error:
        raise InvalidEvent(f"event {event.id} ({event.type}) does not match its schema: {error}") from None


async def _keep_evidence(
    session: AsyncSession,
    case_id: uuid.UUID,
    service_name: str,
    kind: Literal["detection", "recheck"],
    refs: Sequence[EvidenceRef],
) -> None:
    if not refs:
        return
    rows = [
        {
            "case_id": case_id,
            "kind": kind,
            "service": service_name,
            "sha256": ref.sha256,
            "content_type": ref.content_type,
            "size_bytes": ref.size_bytes,
            "url": ref.url,
            "taken_at": ref.taken_at,
            "uploaded_by": f"service:{service_name}",
            "uploaded_by_name": service_name,
        }
        for ref in refs
    ]
    # The same image twice (in one event, or again at a re-check) is kept once.
    await session.execute(insert(CaseEvidence).values(rows).on_conflict_do_nothing())


async def raise_case(
    uow: UnitOfWork,
    event: CloudEvent,
    intake: Intake,
    calendars: CalendarHolder,
    grid: GridHolder,
    duplicate_radius_m: float,
) -> None:
    """Open a case for a problem another service found, keep its evidence, and register it.

    The point is placed on the unit grid; the producer's district is needed only off the grid."""
    problem = parse(event, intake.event)
    origin = Origin(service=intake.service, reference=problem.reference)
    session = uow.session
    existing = await session.scalar(
        select(Case.number).where(
            Case.origin_service == origin.service, Case.origin_reference == origin.reference
        )
    )
    if existing is not None:
        # Republished under a new event id: the case exists. (A concurrent first delivery loses
        # on the unique origin index, rolls back, and finds the case when it is redelivered.)
        log.info("%s %s already raised case %s", origin.service, origin.reference, existing)
        return
    district_code = problem.district_code or grid.index.district_of(
        problem.location.lon, problem.location.lat
    )
    if district_code is None:
        raise DistrictUnknown(
            f"{intake.event.subject} {problem.reference} names no district_code and its point is "
            "outside the unit grid"
        )
    try:
        request = RaisedCase(
            category_code=problem.category_code,
            description=problem.description,
            location=problem.location,
            district_code=district_code,
            address=problem.address,
            source=intake.source,
        )
    except ValidationError as error:
        raise InvalidEvent(f"{intake.event.subject} {problem.reference} cannot be a case: {error}") from None
    case = await service.report_case(
        uow,
        request,
        reporter(intake.service),
        calendars.calendar,
        origin=origin,
        grid=grid.index,
        duplicate_radius_m=duplicate_radius_m,
    )
    await _keep_evidence(session, case.id, intake.service, "detection", problem.evidence)
    # Reporting may already have merged it into an open case (video duplicates): then it stays so.
    if case.status is CaseStatus.REPORTED:
        await service.transition(
            uow,
            case.id,
            Action.REGISTER,
            INTAKE,
            expected_version=case.version,
            calendar=calendars.calendar,
            note=f"raised by {origin.service} {origin.reference}",
        )


async def apply_recheck(uow: UnitOfWork, event: CloudEvent, calendars: CalendarHolder) -> None:
    """Close a handled case whose re-check passed; send it back to the unit when it failed.

    A re-check of a case that is not ``handled`` (already closed by an inspector, cancelled, back
    in rework) changes nothing: it is written to the case's history and the event is done.
    """
    recheck = parse(event, vision.RecheckCompleted)
    session = uow.session
    case = await service.get_case(session, recheck.case_id, for_update=True)
    outcome = "passed" if recheck.passed else "failed"
    summary = f"AI re-check {recheck.recheck_id} of camera {recheck.camera_id} {outcome}"
    if recheck.note:
        summary = f"{summary}: {recheck.note}"
    if case.status is not CaseStatus.HANDLED:
        log.info("re-check %s of case %s ignored: it is %s", recheck.recheck_id, case.number, case.status)
        session.add(
            CaseHistory(
                case_id=case.id,
                action="recheck_ignored",
                from_status=case.status,
                to_status=case.status,
                actor=RECHECK.subject,
                actor_name=RECHECK.name,
                note=f"{summary}; ignored: the case is {case.status.value}, not handled",
            )
        )
        return
    await _keep_evidence(session, case.id, "vision", "recheck", recheck.evidence)
    await service.transition(
        uow,
        case.id,
        Action.CLOSE if recheck.passed else Action.REWORK,
        RECHECK,
        expected_version=case.version,
        calendar=calendars.calendar,
        note=summary,
    )


class OriginCaseNotYetRaised(Exception):
    """The event follows up a problem whose case this service has not opened yet: the two arrive by
    different consumers, so the follow-up can come first. Not a ``DomainError``: it is retried with
    the inbox's backoff (and dead-lettered, replayable, if the case never comes)."""


async def note_incident_closed(uow: UnitOfWork, event: CloudEvent) -> None:
    """Write in the leak incident's case that the gas service closed the incident.

    The case itself moves on as any case does: its unit handles it and an inspector verifies it;
    the platform does not close a case for them. A case already finished gets the note all the same.
    """
    closed = parse(event, gas.IncidentClosed)
    session = uow.session
    case = await session.scalar(
        select(Case)
        .where(Case.origin_service == "gas", Case.origin_reference == str(closed.incident_id))
        .with_for_update()
    )
    if case is None:
        raise OriginCaseNotYetRaised(f"no case yet for gas incident {closed.incident_id}")
    session.add(
        CaseHistory(
            case_id=case.id,
            action="origin_closed",
            from_status=case.status,
            to_status=case.status,
            actor="service:gas",
            actor_name="gas",
            note=f"gas incident {closed.incident_id} closed at {closed.closed_at.isoformat()}: "
            "repaired and measured safe",
        )
    )


def consumers(calendars: CalendarHolder, grid: GridHolder, duplicate_radius_m: float) -> list[ConsumerSpec]:
    """The case service's consumers of other services' events."""

    def raising(intake: Intake) -> Handler:
        async def handle(uow: UnitOfWork, event: CloudEvent) -> None:
            await raise_case(uow, event, intake, calendars, grid, duplicate_radius_m)

        return handle

    async def rechecking(uow: UnitOfWork, event: CloudEvent) -> None:
        await apply_recheck(uow, event, calendars)

    specs = [
        ConsumerSpec(
            name=consumer_name(intake.event),
            domain=intake.event.domain(),
            subject=intake.event.subject,
            handler=raising(intake),
        )
        for intake in INTAKES
    ]
    specs.append(
        ConsumerSpec(
            name=consumer_name(vision.RecheckCompleted),
            domain=vision.RecheckCompleted.domain(),
            subject=vision.RecheckCompleted.subject,
            handler=rechecking,
        )
    )
    specs.append(
        ConsumerSpec(
            name=consumer_name(gas.IncidentClosed),
            domain=gas.IncidentClosed.domain(),
            subject=gas.IncidentClosed.subject,
            handler=note_incident_closed,
        )
    )
    return specs
