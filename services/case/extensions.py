"""Extension requests as use cases: request, approve, deny; each a case change with history and event."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.db import UnitOfWork, transaction_time
from citygrid.errors import NotFound
from contract.case import CaseExtensionApproved, CaseExtensionDenied, CaseExtensionRequested
from services.case import events, service
from services.case.domain import extensions as rules
from services.case.domain.categories import Stage
from services.case.domain.principals import acting_roles, check_unit
from services.case.models import Case, CaseExtension, CaseHistory


class ExtensionNotFound(NotFound):
    code = "case.extension_not_found"


async def _case_at(
    session: AsyncSession, case_id: uuid.UUID, actor: Principal, expected_version: int
) -> Case:
    case = await service.visible_case(session, case_id, actor, for_update=True)
    if case.version != expected_version:
        raise service.StaleVersion(
            f"the case is at version {case.version}, not {expected_version}; reload it and retry",
            current_version=case.version,
        )
    return case


def _clock(case: Case) -> rules.CaseClock:
    stage = Stage(case.stage) if case.stage else None
    return rules.CaseClock(
        case.status, stage, case.deadline_at, case.stage_started_at if stage is Stage.HANDLE else None
    )


def _changed(case: Case, actor: Principal, action: str, note: str | None, now: datetime) -> CaseHistory:
    case.version += 1
    case.updated_at = now
    return CaseHistory(
        case_id=case.id,
        action=action,
        from_status=case.status,
        to_status=case.status,
        actor=actor.subject,
        actor_name=actor.name,
        note=note,
        unit=case.unit,
        at=now,
    )


async def request_extension(
    uow: UnitOfWork,
    case_id: uuid.UUID,
    actor: Principal,
    *,
    expected_version: int,
    reason: str,
    new_deadline: datetime,
) -> tuple[Case, CaseExtension]:
    session = uow.session
    case = await _case_at(session, case_id, actor, expected_version)
    roles = acting_roles(actor.kind, actor.roles)
    now = await transaction_time(session)
    clock = _clock(case)
    pending = await session.scalar(
        select(CaseExtension)
        .where(CaseExtension.case_id == case.id, CaseExtension.status == rules.ExtensionStatus.PENDING.value)
        .with_for_update()
    )
    if pending is not None and rules.has_lapsed(pending.requested_at, clock):
        pending.status = rules.ExtensionStatus.LAPSED.value
        await session.flush()  # before the new request takes the one pending place
        pending = None
    rules.check_request(clock, roles, requested=new_deadline, now=now, pending=pending is not None)
    check_unit("requesting an extension", case_unit=case.unit, actor_unit=actor.unit, roles=roles)
    extension = CaseExtension(
        case_id=case.id,
        status=rules.ExtensionStatus.PENDING.value,
        reason=reason,
        requested_deadline=new_deadline,
        previous_deadline=case.deadline_at,
        requested_by=actor.subject,
        requested_by_name=actor.name,
        requested_at=now,
    )
    session.add(extension)
    session.add(_changed(case, actor, rules.REQUESTED, reason, now))
    await session.flush()
    events.record(
        uow,
        CaseExtensionRequested,
        case,
        actor,
        reason,
        extension_id=extension.id,
        requested_deadline=new_deadline,
        current_deadline=case.deadline_at,
    )
    return case, extension


async def decide_extension(
    uow: UnitOfWork,
    case_id: uuid.UUID,
    extension_id: uuid.UUID,
    actor: Principal,
    *,
    expected_version: int,
    approve: bool,
    note: str | None,
    deadline: datetime | None = None,
) -> tuple[Case, CaseExtension]:
    session = uow.session
    case = await _case_at(session, case_id, actor, expected_version)
    extension = await session.scalar(
        select(CaseExtension)
        .where(CaseExtension.id == extension_id, CaseExtension.case_id == case.id)
        .with_for_update()
    )
    if extension is None:
        raise ExtensionNotFound(f"case {case.number} has no extension request {extension_id}")
    now = await transaction_time(session)
    granted = rules.decide(
        _clock(case),
        acting_roles(actor.kind, actor.roles),
        status=rules.ExtensionStatus(extension.status),
        approve=approve,
        requested=extension.requested_deadline,
        granted=deadline,
        now=now,
        requested_at=extension.requested_at,
    )
    extension.decided_by = actor.subject
    extension.decided_by_name = actor.name
    extension.decided_at = now
    extension.decision_note = note
    if granted is None:
        extension.status = rules.ExtensionStatus.DENIED.value
        session.add(_changed(case, actor, rules.DENIED, note, now))
        events.record(
            uow,
            CaseExtensionDenied,
            case,
            actor,
            note,
            extension_id=extension.id,
            requested_deadline=extension.requested_deadline,
        )
    else:
        previous = case.deadline_at
        extension.status = rules.ExtensionStatus.APPROVED.value
        extension.previous_deadline = previous
        extension.granted_deadline = granted
        case.deadline_at = granted
        case.overdue_at = None  # the new deadline is not yet missed; the scan watches it again
        session.add(_changed(case, actor, rules.APPROVED, note, now))
        events.record(
            uow,
            CaseExtensionApproved,
            case,
            actor,
            note,
            extension_id=extension.id,
            previous_deadline=previous,
            deadline_at=granted,
        )
    await session.flush()
    return case, extension


async def list_extensions(
    session: AsyncSession, case_id: uuid.UUID, principal: Principal
) -> list[CaseExtension]:
    await service.visible_case(session, case_id, principal)
    rows = await session.scalars(
        select(CaseExtension)
        .where(CaseExtension.case_id == case_id)
        .order_by(CaseExtension.requested_at, CaseExtension.id)
    )
    return list(rows.all())
