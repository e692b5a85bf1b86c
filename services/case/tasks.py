"""The unit handler's field work: the unit's task list and checking in on site with GPS."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.clock import within_range
from citygrid.db import UnitOfWork, transaction_time
from citygrid.pagination import InvalidCursor, cursor_value, decode_cursor, encode_cursor
from contract.case import CaseStatus
from contract.common import GeoPoint
from services.case import service
from services.case.domain import evidence as evidence_rules
from services.case.domain.grid import haversine_m
from services.case.domain.principals import NoUnit, acting_roles, check_unit
from services.case.domain.workflow import Role, RoleNotAllowed
from services.case.models import Case, CaseCheckIn

TASK_STATUSES = (CaseStatus.DISPATCHED, CaseStatus.ACCEPTED, CaseStatus.SUSPENDED)
TASK_ROLES = frozenset({Role.HANDLER, Role.SUPERVISOR})


class TaskScope(StrEnum):
    UNIT = "unit"  # every case in the unit's hands
    MINE = "mine"  # the cases this person accepted


def _unit_of(actor: Principal) -> str:
    roles = acting_roles(actor.kind, actor.roles)
    if roles.isdisjoint(TASK_ROLES):
        names = sorted(role.value for role in TASK_ROLES)
        raise RoleNotAllowed(f"the task list needs one of the roles {names}", required_roles=names)
    if actor.unit is None:
        raise NoUnit("your credentials name no unit; ask the gateway admin to set your unit")
    return actor.unit


def _after(cursor: str) -> tuple[datetime | None, uuid.UUID]:
    raw_deadline, raw_id = decode_cursor(cursor, 2)
    if raw_deadline is not None and not isinstance(raw_deadline, str):
        raise InvalidCursor("the cursor is not one this API issued")
    deadline = (
        None
        if raw_deadline is None
        else cursor_value(lambda raw: within_range(datetime.fromisoformat(str(raw))), raw_deadline)
    )
    return deadline, cursor_value(lambda raw: uuid.UUID(str(raw)), raw_id)


async def my_tasks(
    session: AsyncSession,
    actor: Principal,
    *,
    scope: TaskScope,
    status: CaseStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Case], str | None]:
    """The unit's cases in hand, soonest deadline first; suspended ones (no running clock) last."""
    unit = _unit_of(actor)
    statuses = TASK_STATUSES if status is None else tuple(s for s in TASK_STATUSES if s is status)
    query = (
        select(Case)
        .where(Case.unit == unit, Case.status.in_(statuses))
        .order_by(Case.deadline_at.asc().nulls_last(), Case.id)
        .limit(limit + 1)
    )
    if scope is TaskScope.MINE:
        query = query.where(Case.accepted_by == actor.subject)
    if actor.district is not None:  # a unit working across districts, seen by one district's handler
        query = query.where(Case.district_code == actor.district)
    if cursor is not None:
        deadline, last_id = _after(cursor)
        if deadline is None:
            query = query.where(Case.deadline_at.is_(None), Case.id > last_id)
        else:
            query = query.where(
                or_(
                    Case.deadline_at > deadline,
                    and_(Case.deadline_at == deadline, Case.id > last_id),
                    Case.deadline_at.is_(None),
                )
            )
    rows = list((await session.scalars(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.deadline_at.isoformat() if last.deadline_at else None, str(last.id))
    return rows[:limit], next_cursor


async def check_in(
    uow: UnitOfWork,
    case_id: uuid.UUID,
    actor: Principal,
    *,
    location: GeoPoint,
    accuracy_m: float | None,
    note: str | None,
    radius_m: float,
) -> CaseCheckIn:
    """Record the handler on site. A fix beyond the radius is kept, flagged ``far``, not refused:
    GPS in street canyons is often off by a block, and the record is what the evaluation reads."""
    session = uow.session
    case = await service.visible_case(session, case_id, actor)
    roles = acting_roles(actor.kind, actor.roles)
    evidence_rules.check_check_in(case.status, roles)
    check_unit("checking in", case_unit=case.unit, actor_unit=actor.unit, roles=roles)
    distance = haversine_m(case.lon, case.lat, location.lon, location.lat)
    record = CaseCheckIn(
        case_id=case.id,
        actor=actor.subject,
        actor_name=actor.name,
        unit=actor.unit,
        lon=location.lon,
        lat=location.lat,
        accuracy_m=accuracy_m,
        distance_m=round(distance, 1),
        far=distance > radius_m,
        note=note,
        at=await transaction_time(session),
    )
    session.add(record)
    await session.flush()
    return record


async def list_check_ins(
    session: AsyncSession, case_id: uuid.UUID, principal: Principal
) -> list[CaseCheckIn]:
    await service.visible_case(session, case_id, principal)
    rows = await session.scalars(
        select(CaseCheckIn).where(CaseCheckIn.case_id == case_id).order_by(CaseCheckIn.at, CaseCheckIn.id)
    )
    return list(rows.all())
