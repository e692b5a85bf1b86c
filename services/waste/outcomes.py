"""The cases raised for this service's violations, followed as they move on: each violation keeps
its case's id and status, and is resolved when the case ends (closed, cancelled, rejected, or merged
into the case it duplicates).

The case service names the violation in the case's ``origin`` (``waste`` and the violation's id), a
bin-side violation or a chain violation alike. The consumer applies a case's events only in version
order (``mirrors``), so a step redelivered or arriving late never overwrites a newer one; the rest of
the city's cases are skipped before any database work.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from citygrid.db import UnitOfWork, transaction_time
from citygrid.events import CloudEvent
from citygrid.inbox import ConsumerSpec
from contract.case import ENDING_EVENT_TYPES, CaseEvent
from services.waste.chain.models import ChainViolation
from services.waste.events import CASE_EVENTS, CASE_EVENTS_CONSUMER
from services.waste.models import Violation


def raised_by_waste(event: CloudEvent) -> bool:
    origin = event.data.get("origin")
    return isinstance(origin, dict) and origin.get("service") == "waste"


async def follow_case(uow: UnitOfWork, event: CloudEvent) -> None:
    """Mirror one step of a case this service raised on its violation; a case naming no violation
    of ours is ignored."""
    data = CaseEvent.model_validate(event.data)
    if data.origin is None or data.origin.service != "waste":
        return
    try:
        violation_id = uuid.UUID(data.origin.reference)
    except ValueError:
        return
    session = uow.session
    found: Violation | ChainViolation | None = await session.scalar(
        select(Violation).where(Violation.id == violation_id).with_for_update()
    )
    if found is None:
        found = await session.scalar(
            select(ChainViolation).where(ChainViolation.id == violation_id).with_for_update()
        )
    if found is None:
        return
    if found.resolved_at is not None and event.type not in ENDING_EVENT_TYPES:
        return  # a case's end is final: a step redelivered after it changes nothing
    found.case_id = data.case_id
    found.case_status = data.status.value
    if event.type in ENDING_EVENT_TYPES and found.resolved_at is None:
        found.resolved_at = await transaction_time(session)


def consumer() -> ConsumerSpec:
    return ConsumerSpec(
        name=CASE_EVENTS_CONSUMER,
        domain="case",
        subject=CASE_EVENTS,
        handler=follow_case,
        mirrors=True,
        wants=raised_by_waste,
    )
