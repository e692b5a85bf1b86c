"""Bin-side supervision over HTTP: the AI boxes' batches in, the violations out (newest first)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from sqlalchemy import Select, select, tuple_

from citygrid.auth import CurrentPrincipal, district_scope, require_district
from citygrid.errors import NotFound
from citygrid.pagination import Cursor, Limit, Page, cursor_time, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from contract.common import Code, KnownDistrict
from contract.waste import WasteViolation
from services.waste.models import Violation
from services.waste.periods import within_records
from services.waste.supervision import service
from services.waste.supervision.schemas import BatchResult, BinEventBatch, ViolationOut

router = APIRouter(prefix="/v1", tags=["waste supervision"])


class UnknownViolation(NotFound):
    code = "waste.unknown_violation"
    title = "Unknown violation"


def bin_events_router(counted: Callable[[service.Tally], None]) -> APIRouter:
    """The AI boxes' intake; ``counted`` adds a batch's counts to the service's metrics."""
    intake = APIRouter(prefix="/v1", tags=["waste supervision"])

    @intake.post("/bin-events", operation_id="ingest_bin_events")
    async def ingest_bin_events(
        body: BinEventBatch, runtime: RuntimeDep, principal: CurrentPrincipal
    ) -> BatchResult:
        """Up to 500 events of drop-off points' AI boxes, each answered on its own: a new violation,
        the same one seen again, ignored (and why), a duplicate of an event sent before, or refused
        with a problem code. Needs ``waste:ingest``."""
        tally = service.Tally()
        async with runtime.uow() as uow:
            result = await service.ingest(uow, body.events, principal, tally)
        counted(tally)
        return result

    return intake


@router.get("/violations", operation_id="list_violations")
async def list_violations(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: KnownDistrict | None = None,
    point: Annotated[Code | None, Query()] = None,
    kind: WasteViolation | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ViolationOut]:
    """Violations at drop-off points, newest episode first: by district (yours, if you are bound to
    one), point, kind, period."""
    within_records(since=since, until=until)
    query: Select[Violation] = (
        select(Violation).order_by(Violation.episode_started_at.desc(), Violation.id.desc()).limit(limit + 1)
    )
    if cursor:
        at, last = decode_cursor(cursor, 2)
        query = query.where(
            tuple_(Violation.episode_started_at, Violation.id)
            < tuple_(cursor_time(at), cursor_value(uuid.UUID, last))
        )
    where: list[Any] = []
    if (scoped := district_scope(principal, district)) is not None:
        where.append(Violation.district_code == scoped)
    if point is not None:
        where.append(Violation.point_code == point)
    if kind is not None:
        where.append(Violation.kind == kind.value)
    if since is not None:
        where.append(Violation.episode_started_at >= since)
    if until is not None:
        where.append(Violation.episode_started_at < until)
    async with runtime.reads() as session:
        found = list((await session.scalars(query.where(*where))).all())
    next_cursor = None
    if len(found) > limit:
        last_shown: Violation = found[limit - 1]
        next_cursor = encode_cursor(last_shown.episode_started_at.isoformat(), str(last_shown.id))
    return Page[ViolationOut](
        items=[ViolationOut.model_validate(v) for v in found[:limit]], next_cursor=next_cursor
    )


@router.get("/violations/{violation_id}", operation_id="get_violation")
async def get_violation(
    violation_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ViolationOut:
    async with runtime.reads() as session:
        found = await session.get(Violation, violation_id)
    if found is None:
        raise UnknownViolation(f"no violation {violation_id}")
    require_district(principal, found.district_code)
    return ViolationOut.model_validate(found)
