"""What the case service publishes: one event per lifecycle step, built from the case row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.natsauth import Durable, NatsIdentity
from contract.case import (
    CaseAccepted,
    CaseCancelled,
    CaseClosed,
    CaseDispatched,
    CaseEvent,
    CaseHandled,
    CaseMerged,
    CaseRegistered,
    CaseRejected,
    CaseReported,
    CaseResumed,
    CaseReturned,
    CaseReworked,
    CaseSuspended,
)
from contract.common import GeoPoint, Origin
from services.case.domain.workflow import Action
from services.case.models import Case

if TYPE_CHECKING:
    from services.case.service import CaseRow

PUBLISHES = "case"

# What the case service does on NATS, and so all it may do (citygrid.natsauth): publish its own
# events, read the other services' problems and the AI re-check verdicts through its durable
# consumers (services/case/intake.py, a test keeps the two equal), and follow its own stream for the
# live feed (services/case/live_api.py).
NATS_IDENTITY = NatsIdentity(
    user="case",
    publishes=PUBLISHES,
    consumes=(
        Durable("vision", "case-vision-alarm-confirmed", "vision.alarm.confirmed"),
        Durable("gas", "case-gas-violation-detected", "gas.violation.detected"),
        Durable("gas", "case-gas-incident-reported", "gas.incident.reported"),
        Durable("muck", "case-muck-violation-detected", "muck.violation.detected"),
        Durable("waste", "case-waste-violation-detected", "waste.violation.detected"),
        Durable("vision", "case-vision-recheck-completed", "vision.recheck.completed"),
        Durable("gas", "case-gas-incident-closed", "gas.incident.closed"),
    ),
    follows=(PUBLISHES,),
)

EVENT_OF_ACTION: dict[Action, type[CaseEvent]] = {
    Action.REGISTER: CaseRegistered,
    Action.REJECT: CaseRejected,
    Action.DISPATCH: CaseDispatched,
    Action.HANDLE: CaseHandled,
    Action.CLOSE: CaseClosed,
    Action.REWORK: CaseReworked,
    Action.MERGE: CaseMerged,
    Action.ACCEPT: CaseAccepted,
    Action.RETURN: CaseReturned,
    Action.SUSPEND: CaseSuspended,
    Action.RESUME: CaseResumed,
    Action.CANCEL: CaseCancelled,
}


def origin_of(case: Case | CaseRow) -> Origin | None:
    """The service and record that raised the case, if another service raised it."""
    if case.origin_service is None or case.origin_reference is None:
        return None
    return Origin.model_validate({"service": case.origin_service, "reference": case.origin_reference})


def record(
    uow: UnitOfWork,
    event_type: type[CaseEvent],
    case: Case,
    actor: Principal,
    note: str | None,
    **extra: Any,
) -> None:
    uow.publish(
        event_type(
            case_id=case.id,
            number=case.number,
            status=case.status,
            category_code=case.category_code,
            district_code=case.district_code,
            location=GeoPoint.of(case.lon, case.lat),
            source=case.source,
            unit=case.unit,
            version=case.version,
            actor=actor.subject,
            note=note,
            occurred_at=case.updated_at,
            origin=origin_of(case),
            **extra,
        ),
        aggregate_id=str(case.id),
        version=case.version,
    )


def record_report(uow: UnitOfWork, case: Case, actor: Principal) -> None:
    record(uow, CaseReported, case, actor, None)
