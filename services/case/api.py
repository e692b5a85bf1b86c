"""HTTP routes of the case service: thin, they parse, call the service layer and shape responses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from citygrid.auth import CurrentPrincipal, Principal, district_scope
from citygrid.clock import CityTime
from citygrid.idempotency import Idempotency
from citygrid.masking import PII_SCOPE
from citygrid.middleware import public_path
from citygrid.pagination import Cursor, Limit, Page
from citygrid.runtime import Runtime, RuntimeDep
from citygrid.versioning import IfMatch, etag, expected_version
from contract.case import CaseStatus
from contract.common import DistrictCode, GeoPoint
from services.case import events, service
from services.case.catalogue import CalendarHolder
from services.case.context import Calendars, DuplicateRadius, Grid
from services.case.domain.workflow import Action
from services.case.evidence import evidence_out_of_row
from services.case.models import Case
from services.case.schemas import (
    CaseDetailOut,
    CaseOut,
    CategoryCode,
    Decision,
    Dispatch,
    Merge,
    Reasoned,
    ReportCase,
    Verification,
    address_out,
    free_text_out,
    history_out,
    reporter_out,
)

router = APIRouter(prefix="/v1", tags=["cases"])


def case_out(case: Case | service.CaseRow, principal: Principal) -> CaseOut:
    # Free text and a household address may name or locate a person: masked without pii:read.
    reveal = principal.has_scope(PII_SCOPE)
    return CaseOut(
        id=case.id,
        number=case.number,
        status=case.status,
        category_code=case.category_code,
        description=free_text_out(case.description, reveal=reveal) or "",
        location=GeoPoint.of(case.lon, case.lat),
        district_code=case.district_code,
        address=address_out(case.address, reveal=reveal),
        source=case.source,
        origin=events.origin_of(case),
        reporter=reporter_out(
            case.reporter_name,
            case.reporter_phone,
            email=case.reporter_email,
            reveal=reveal,
        ),
        unit=case.unit,
        merged_into=case.merged_into,
        merged_into_number=case.merged_into_number,
        grid_code=case.grid_code,
        community_code=case.community_code,
        street_code=case.street_code,
        likely_duplicate_of=case.likely_duplicate_of,
        stage=case.stage,
        deadline_at=case.deadline_at,
        overdue_at=case.overdue_at,
        version=case.version,
        created_at=case.created_at,
        updated_at=case.updated_at,
    )


def detail_out(record: service.CaseRecord, principal: Principal) -> CaseDetailOut:
    reveal = principal.has_scope(PII_SCOPE)
    return CaseDetailOut(
        **case_out(record.case, principal).model_dump(),
        history=[history_out(entry, reveal=reveal) for entry in record.history],
        evidence=[evidence_out_of_row(row) for row in record.evidence],
    )


@router.post(
    "/cases",
    status_code=201,
    operation_id="report_case",
    response_model=CaseOut,
    responses={201: {"headers": {"ETag": {"schema": {"type": "string"}}}}},
)
async def report_case(
    body: ReportCase,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    calendars: Calendars,
    grid: Grid,
    duplicate_radius_m: DuplicateRadius,
) -> CaseOut | JSONResponse:
    """Report a problem. Send an ``Idempotency-Key`` to make retries safe.

    The point is placed on the unit grid: the cell's district wins over the reporter's. An open case
    of the same small class nearby is named in ``likely_duplicate_of``; a video report is merged into it.
    """
    idempotency = await Idempotency.from_request(request, principal.subject)
    async with runtime.uow() as uow:
        replay = await idempotency.replay(uow.session)
        if replay is not None:
            return replay
        case = await service.report_case(
            uow, body, principal, calendars.calendar, grid=grid.index, duplicate_radius_m=duplicate_radius_m
        )
        out = case_out(case, principal)
        response.headers["ETag"] = etag(case.version)
        response.headers["Location"] = public_path(request, f"{request.url.path}/{case.id}")
        # A retried report gets these back too, so the client can go on with If-Match.
        await idempotency.remember(uow.session, 201, out.model_dump(mode="json"), headers=response.headers)
    return out


@router.get("/cases", operation_id="list_cases")
async def list_cases(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    status: CaseStatus | None = None,
    district: DistrictCode | None = None,
    category: Annotated[CategoryCode | None, Query()] = None,
    reported_from: Annotated[CityTime | None, Query(description="RFC 3339, inclusive.")] = None,
    reported_to: Annotated[CityTime | None, Query(description="RFC 3339, exclusive.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CaseOut]:
    cases, next_cursor = await service.list_cases(
        runtime,
        limit=limit,
        cursor=cursor,
        status=status,
        district_code=district_scope(principal, district),
        category_code=category,
        reported_from=reported_from,
        reported_to=reported_to,
    )
    return Page[CaseOut](items=[case_out(case, principal) for case in cases], next_cursor=next_cursor)


@router.get("/cases/{case_id}", operation_id="get_case")
async def get_case(
    case_id: uuid.UUID, response: Response, runtime: RuntimeDep, principal: CurrentPrincipal
) -> CaseDetailOut:
    record = await service.visible_case_record(runtime, case_id, principal)
    response.headers["ETag"] = etag(record.case.version)
    return detail_out(record, principal)


@dataclass
class Steps:
    """Everything a workflow step needs, injected once: ``steps.take(case_id, action, …)``."""

    runtime: Runtime
    principal: Principal
    response: Response
    calendars: CalendarHolder

    async def take(
        self,
        case_id: uuid.UUID,
        action: Action,
        if_match: str | None,
        *,
        note: str | None = None,
        unit: str | None = None,
        merge_into: uuid.UUID | None = None,
    ) -> CaseDetailOut:
        version = expected_version(if_match)
        async with self.runtime.uow() as uow:
            case = await service.transition(
                uow,
                case_id,
                action,
                self.principal,
                expected_version=version,
                calendar=self.calendars.calendar,
                note=note,
                unit=unit,
                merge_into=merge_into,
            )
            record = await service.case_record(uow.session, case)
        self.response.headers["ETag"] = etag(case.version)
        return detail_out(record, self.principal)


async def steps(
    runtime: RuntimeDep, principal: CurrentPrincipal, response: Response, calendars: Calendars
) -> Steps:
    return Steps(runtime, principal, response, calendars)


StepsDep = Annotated[Steps, Depends(steps)]


@router.post("/cases/{case_id}/register", operation_id="register_case")
async def register_case(
    case_id: uuid.UUID, steps: StepsDep, if_match: IfMatch = None, body: Decision | None = None
) -> CaseDetailOut:
    """立案: accept the report as a case (operator)."""
    return await steps.take(case_id, Action.REGISTER, if_match, note=body.note if body else None)


@router.post("/cases/{case_id}/reject", operation_id="reject_case")
async def reject_case(
    case_id: uuid.UUID, body: Reasoned, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """Refuse the report with a reason (operator)."""
    return await steps.take(case_id, Action.REJECT, if_match, note=body.note)


@router.post("/cases/{case_id}/merge", operation_id="merge_case")
async def merge_case(
    case_id: uuid.UUID, body: Merge, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """Merge a report into the open case it duplicates (operator); the reporter is told that case's number."""
    return await steps.take(case_id, Action.MERGE, if_match, note=body.note, merge_into=body.into)


@router.post("/cases/{case_id}/dispatch", operation_id="dispatch_case")
async def dispatch_case(
    case_id: uuid.UUID, body: Dispatch, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """派遣: send the case to the responsible unit (dispatcher)."""
    return await steps.take(case_id, Action.DISPATCH, if_match, note=body.note, unit=body.unit)


@router.post("/cases/{case_id}/accept", operation_id="accept_case")
async def accept_case(
    case_id: uuid.UUID, steps: StepsDep, if_match: IfMatch = None, body: Decision | None = None
) -> CaseDetailOut:
    """The unit takes the case on (unit handler)."""
    return await steps.take(case_id, Action.ACCEPT, if_match, note=body.note if body else None)


@router.post("/cases/{case_id}/return", operation_id="return_case")
async def return_case(
    case_id: uuid.UUID, body: Reasoned, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """ "Not ours": the unit sends the case back to the dispatcher with the reason (unit handler)."""
    return await steps.take(case_id, Action.RETURN, if_match, note=body.note)


@router.post("/cases/{case_id}/suspend", operation_id="suspend_case")
async def suspend_case(
    case_id: uuid.UUID, body: Reasoned, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """Pause handling, e.g. waiting for another department; the clock stops (dispatcher)."""
    return await steps.take(case_id, Action.SUSPEND, if_match, note=body.note)


@router.post("/cases/{case_id}/resume", operation_id="resume_case")
async def resume_case(
    case_id: uuid.UUID, steps: StepsDep, if_match: IfMatch = None, body: Decision | None = None
) -> CaseDetailOut:
    """Resume a suspended case with the time it had left (dispatcher)."""
    return await steps.take(case_id, Action.RESUME, if_match, note=body.note if body else None)


@router.post("/cases/{case_id}/handle", operation_id="handle_case")
async def handle_case(
    case_id: uuid.UUID, steps: StepsDep, if_match: IfMatch = None, body: Decision | None = None
) -> CaseDetailOut:
    """处置: the unit reports the problem fixed (unit handler)."""
    return await steps.take(case_id, Action.HANDLE, if_match, note=body.note if body else None)


@router.post("/cases/{case_id}/verify", operation_id="verify_case")
async def verify_case(
    case_id: uuid.UUID, body: Verification, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """核查: passed closes the case; failed sends it back to the unit for rework, with the reason (inspector)."""
    action = Action.CLOSE if body.passed else Action.REWORK
    return await steps.take(case_id, action, if_match, note=body.note)


@router.post("/cases/{case_id}/cancel", operation_id="cancel_case")
async def cancel_case(
    case_id: uuid.UUID, body: Reasoned, steps: StepsDep, if_match: IfMatch = None
) -> CaseDetailOut:
    """Withdraw an open case, with the reason (supervisor)."""
    return await steps.take(case_id, Action.CANCEL, if_match, note=body.note)
