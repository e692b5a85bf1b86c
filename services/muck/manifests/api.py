"""The manifests' routes: thin, each a call into ``manifests.service``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy import Select, select

from citygrid.auth import CurrentPrincipal, district_scope
from citygrid.idempotency import Idempotency
from citygrid.middleware import public_path
from citygrid.pagination import Cursor, Limit, NewestFirst, Page
from citygrid.runtime import RuntimeDep
from contract.common import Code, KnownDistrict
from contract.muck import ManifestStatus, Plate
from services.muck.domain.manifests import ManifestAction
from services.muck.manifests import service
from services.muck.manifests.schemas import (
    ClosureOut,
    ConfirmIn,
    LoadIn,
    ManifestDetailOut,
    ManifestIn,
    ManifestOut,
    ResolveIn,
    StepOut,
)
from services.muck.models import ManifestRow
from services.muck.positions.api import InvalidPeriod

router = APIRouter(prefix="/v1", tags=["muck manifests"])
MAX_CLOSURE_PERIOD = timedelta(days=366)
MANIFESTS_PAGE = NewestFirst(ManifestRow.issued_at, ManifestRow.id)


@router.post("/manifests", operation_id="issue_manifest", status_code=201, response_model=ManifestOut)
async def issue_manifest(
    body: ManifestIn, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> ManifestOut | JSONResponse:
    """Issue the electronic manifest of one load. Send an ``Idempotency-Key`` to make retries safe."""
    idempotency = await Idempotency.from_request(request, principal.subject)
    async with runtime.uow() as uow:
        replay = await idempotency.replay(uow.session)
        if replay is not None:
            return replay
        row = await service.issue(uow, body, principal)
        out = ManifestOut.model_validate(row)
        response.headers["Location"] = public_path(request, f"/v1/manifests/{row.id}")
        await idempotency.remember(uow.session, 201, out.model_dump(mode="json"), headers=response.headers)
    return out


@router.get("/manifests/closure", operation_id="manifest_closure")
async def manifest_closure(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: AwareDatetime,
    until: AwareDatetime,
    by: Literal["site", "company", "district"] = "district",
    district: KnownDistrict | None = None,
) -> list[ClosureOut]:
    """Closure rates of the manifests issued in ``[since, until)`` (at most a year), per site,
    company or district."""
    if not since < until <= since + MAX_CLOSURE_PERIOD:
        raise InvalidPeriod("until must be after since, and the period at most 366 days")
    async with runtime.analytics() as session:
        rows = await service.closure(session, by, since, until, district_scope(principal, district))
    return [ClosureOut(key=key, due=due, closed=closed, rate=rate) for key, due, closed, rate in rows]


@router.get("/manifests", operation_id="list_manifests")
async def list_manifests(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    status: ManifestStatus | None = None,
    plate: Annotated[Plate | None, Query()] = None,
    origin_site: Annotated[Code | None, Query()] = None,
    district: KnownDistrict | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ManifestOut]:
    """Manifests newest first, by status, truck, origin site or district (yours, if bound to one)."""
    query: Select[Any] = MANIFESTS_PAGE.page_query(select(ManifestRow), limit, cursor)
    if (scoped := district_scope(principal, district)) is not None:
        query = query.where(ManifestRow.district_code == scoped)
    for column, value in (
        (ManifestRow.status, status.value if status is not None else None),
        (ManifestRow.plate, plate),
        (ManifestRow.origin_site, origin_site),
    ):
        if value is not None:
            query = query.where(column == value)
    async with runtime.reads() as session:
        found, next_cursor = MANIFESTS_PAGE.page((await session.scalars(query)).all(), limit)
    return Page[ManifestOut](
        items=[ManifestOut.model_validate(row) for row in found], next_cursor=next_cursor
    )


@router.get("/manifests/{manifest_id}", operation_id="get_manifest")
async def get_manifest(
    manifest_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ManifestDetailOut:
    async with runtime.db() as session:
        row, steps = await service.detail(session, manifest_id, principal)
    return ManifestDetailOut.model_validate(
        {
            **ManifestOut.model_validate(row).model_dump(),
            "steps": [StepOut.model_validate(step) for step in steps],
        }
    )


async def _act(
    runtime: Any, principal: Any, manifest_id: uuid.UUID, action: ManifestAction, **arguments: Any
) -> ManifestOut:
    async with runtime.uow() as uow:
        row = await service.locked(uow.session, manifest_id, principal)
        at = service.step_time(row, arguments.pop("at", None), await uow.now())
        await service.advance(uow, row, action, at=at, actor=principal.subject, **arguments)
        return ManifestOut.model_validate(row)


@router.post("/manifests/{manifest_id}/load", operation_id="load_manifest")
async def load_manifest(
    manifest_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal, body: LoadIn | None = None
) -> ManifestOut:
    """A gate scan: the truck left its site with the load."""
    return await _act(
        runtime, principal, manifest_id, ManifestAction.LOAD, at=body.at if body else None, detail="gate scan"
    )


@router.post("/manifests/{manifest_id}/confirm", operation_id="confirm_manifest")
async def confirm_manifest(
    manifest_id: uuid.UUID, body: ConfirmIn, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ManifestOut:
    """The receiver confirms the quantity received: within 10 % it closes, otherwise it is abnormal."""
    return await _act(
        runtime, principal, manifest_id, ManifestAction.CONFIRM, quantity_m3=body.received_quantity_m3
    )


@router.post("/manifests/{manifest_id}/resolve", operation_id="resolve_manifest")
async def resolve_manifest(
    manifest_id: uuid.UUID, body: ResolveIn, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ManifestOut:
    """A regulator settles an abnormal manifest, with a note; it closes."""
    return await _act(runtime, principal, manifest_id, ManifestAction.RESOLVE, note=body.note)


@router.post("/manifests/{manifest_id}/cancel", operation_id="cancel_manifest")
async def cancel_manifest(
    manifest_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ManifestOut:
    """Cancel a manifest not yet loaded."""
    return await _act(runtime, principal, manifest_id, ManifestAction.CANCEL)
