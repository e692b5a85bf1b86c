"""Transport violations: listed newest first, one with its evidence, its track as GeoJSON."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import Select, select

from citygrid.auth import CurrentPrincipal, Principal, district_scope, require_district
from citygrid.errors import NotFound
from citygrid.pagination import Cursor, Limit, NewestFirst, Page
from citygrid.runtime import Runtime, RuntimeDep
from contract.common import KnownDistrict
from contract.muck import Plate, TransportViolation
from services.muck.models import Violation
from services.muck.rules.service import track_document

router = APIRouter(prefix="/v1", tags=["muck violations"])
VIOLATIONS_PAGE = NewestFirst(Violation.at, Violation.id)
GEOJSON = "application/geo+json"


class UnknownViolation(NotFound):
    code = "muck.unknown_violation"
    title = "Unknown violation"


class ViolationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    plate: str
    kind: str
    severity: Literal["normal", "severe"]
    episode_started_at: datetime
    at: datetime
    lon: float
    lat: float
    detail: str
    manifest_id: uuid.UUID | None
    manifest_number: str | None
    company_code: str | None
    district_code: str | None
    track_sha256: str | None
    track_points: int
    track_url: str
    created_at: datetime


def violation_out(row: Violation) -> ViolationOut:
    return ViolationOut.model_validate(
        {
            **{column: getattr(row, column) for column in ViolationOut.model_fields if hasattr(row, column)},
            "track_points": len(row.track),
            "track_url": f"/api/muck/v1/violations/{row.id}/track",
        }
    )


@router.get("/violations", operation_id="list_violations")
async def list_violations(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: KnownDistrict | None = None,
    plate: Annotated[Plate | None, Query()] = None,
    kind: TransportViolation | None = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ViolationOut]:
    """Violations newest first: by district (yours, if you are bound to one), truck, kind, period."""
    query: Select[Any] = VIOLATIONS_PAGE.page_query(select(Violation), limit, cursor)
    if (scoped := district_scope(principal, district)) is not None:
        query = query.where(Violation.district_code == scoped)
    if plate is not None:
        query = query.where(Violation.plate == plate)
    if kind is not None:
        query = query.where(Violation.kind == kind.value)
    if since is not None:
        query = query.where(Violation.at >= since)
    if until is not None:
        query = query.where(Violation.at < until)
    async with runtime.reads() as session:
        found, next_cursor = VIOLATIONS_PAGE.page((await session.scalars(query)).all(), limit)
    return Page[ViolationOut](items=[violation_out(row) for row in found], next_cursor=next_cursor)


async def _one(runtime: Runtime, principal: Principal, violation_id: uuid.UUID) -> Violation:
    async with runtime.reads() as session:
        found = await session.get(Violation, violation_id)
    if found is None:
        raise UnknownViolation(f"no violation {violation_id}")
    require_district(principal, found.district_code)
    return found


@router.get("/violations/{violation_id}", operation_id="get_violation")
async def get_violation(
    violation_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ViolationOut:
    return violation_out(await _one(runtime, principal, violation_id))


@router.get(
    "/violations/{violation_id}/track",
    operation_id="get_violation_track",
    response_class=Response,
    responses={200: {"content": {GEOJSON: {}}, "description": "The episode's track, a GeoJSON Feature."}},
)
async def get_violation_track(
    violation_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> Response:
    """The track the truck took during the episode: the evidence a case links to, by its SHA-256."""
    found = await _one(runtime, principal, violation_id)
    document = track_document(str(found.id), found.plate, found.kind, found.track)
    return Response(
        document,
        media_type=GEOJSON,
        headers={"ETag": f'"{found.track_sha256}"', "Cache-Control": "private, max-age=86400, immutable"},
    )
