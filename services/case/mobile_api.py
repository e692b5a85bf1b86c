"""HTTP routes of the unit handler's phone: my tasks, check in on site; photos and steps use the
evidence and workflow routes.

Without ``pii:read`` a task's address shows its names, not its numbers, and its description its
text without phones, ID numbers or e-mails; another person's check-in shows where they were to
about 100 m and its distance to the case to 10 m (one's own check-ins are shown as recorded).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from citygrid.auth import CurrentPrincipal, Principal
from citygrid.masking import PII_SCOPE, mask_distance, mask_position
from citygrid.pagination import Cursor, Limit, Page
from citygrid.runtime import RuntimeDep
from contract.case import CaseStatus
from contract.common import GeoPoint
from services.case import tasks
from services.case.context import FieldWork
from services.case.field_schemas import CheckIn, CheckInOut, TaskOut
from services.case.models import Case, CaseCheckIn
from services.case.schemas import address_out, free_text_out

router = APIRouter(prefix="/v1", tags=["handler"])


def task_out(case: Case, principal: Principal) -> TaskOut:
    reveal = principal.has_scope(PII_SCOPE)
    return TaskOut(
        id=case.id,
        number=case.number,
        status=case.status,
        category_code=case.category_code,
        description=free_text_out(case.description, reveal=reveal) or "",
        location=GeoPoint.of(case.lon, case.lat),  # the problem's place, where the handler goes
        address=address_out(case.address, reveal=reveal),
        district_code=case.district_code,
        unit=case.unit,
        accepted_by=case.accepted_by,
        stage=case.stage,
        deadline_at=case.deadline_at,
        overdue_at=case.overdue_at,
        version=case.version,
    )


def check_in_out(record: CaseCheckIn, principal: Principal) -> CheckInOut:
    """A check-in as ``principal`` may see it: a person's position is personal data, so another
    person's fix is rounded to about 100 m and its distance to 10 m without ``pii:read``; ``far`` is
    decided on the exact fix."""
    exact = principal.has_scope(PII_SCOPE) or record.actor == principal.subject
    lon, lat = (record.lon, record.lat) if exact else mask_position(record.lon, record.lat)
    return CheckInOut(
        id=record.id,
        case_id=record.case_id,
        actor=record.actor,
        actor_name=record.actor_name,
        unit=record.unit,
        location=GeoPoint.of(lon, lat),
        accuracy_m=record.accuracy_m,
        distance_m=record.distance_m if exact else mask_distance(record.distance_m),
        far=record.far,
        note=free_text_out(record.note, reveal=exact),
        at=record.at,
    )


@router.get("/my/tasks", operation_id="my_tasks")
async def my_tasks(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    scope: Annotated[
        tasks.TaskScope, Query(description="unit: all the unit's cases in hand; mine: those I accepted.")
    ] = tasks.TaskScope.UNIT,
    status: Annotated[CaseStatus | None, Query(description="dispatched, accepted or suspended.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TaskOut]:
    """The cases dispatched to or accepted by the caller's unit, soonest deadline first (unit handler)."""
    async with runtime.db() as session:
        cases, next_cursor = await tasks.my_tasks(
            session, principal, scope=scope, status=status, limit=limit, cursor=cursor
        )
    return Page[TaskOut](items=[task_out(case, principal) for case in cases], next_cursor=next_cursor)


@router.post("/cases/{case_id}/check-ins", status_code=201, operation_id="check_in")
async def check_in(
    case_id: uuid.UUID, body: CheckIn, runtime: RuntimeDep, principal: CurrentPrincipal, field: FieldWork
) -> CheckInOut:
    """On site: the GPS fix and its distance to the case's point. Farther than the service's
    check-in radius is recorded and flagged ``far``, not refused (unit handler)."""
    async with runtime.uow() as uow:
        record = await tasks.check_in(
            uow,
            case_id,
            principal,
            location=body.location,
            accuracy_m=body.accuracy_m,
            note=body.note,
            radius_m=field.check_in_radius_m,
        )
        out = check_in_out(record, principal)
    return out


@router.get("/cases/{case_id}/check-ins", operation_id="list_check_ins")
async def list_check_ins(
    case_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Page[CheckInOut]:
    """A case's check-ins, oldest first; positions masked as ``check_in_out`` says."""
    async with runtime.db() as session:
        rows = await tasks.list_check_ins(session, case_id, principal)
        return Page[CheckInOut](items=[check_in_out(row, principal) for row in rows])
