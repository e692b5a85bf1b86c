"""The routes of household gas safety: thin, each a call into ``services.gas.safety``."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response

from citygrid.auth import CurrentPrincipal, Principal, district_scope, require_city_wide
from citygrid.masking import PII_SCOPE, mask_text
from citygrid.pagination import Cursor, Limit, Page
from citygrid.runtime import RuntimeDep
from citygrid.versioning import etag
from services.gas import safety
from services.gas.api import cylinder_out, user_out
from services.gas.domain import rules
from services.gas.models import Hazard
from services.gas.safety_schemas import (
    HazardOut,
    InspectionIn,
    InspectionOut,
    OutreachFiguresOut,
    OutreachIn,
    OutreachOut,
    RectifyIn,
    StovePastLifeOut,
)
from services.gas.schemas import CylinderOut

router = APIRouter(prefix="/v1", tags=["gas"])

DistrictQuery = Annotated[str | None, Query(pattern=r"^\d{6}$")]
FirstDay = Annotated[date | None, Query(alias="from", description="Held on or after this day.")]
LastDay = Annotated[date | None, Query(alias="to", description="Held on or before this day.")]


def hazard_out(hazard: Hazard, principal: Principal) -> HazardOut:
    out = HazardOut.model_validate(hazard)
    # Free text may name or reach a person (a neighbour's phone): masked as the case notes are.
    if principal.has_scope(PII_SCOPE):
        return out
    return out.model_copy(update={"description": mask_text(out.description)})


def inspection_out(view: safety.InspectionView, principal: Principal) -> InspectionOut:
    out = InspectionOut.model_validate(view.inspection)
    note = out.note if principal.has_scope(PII_SCOPE) else mask_text(out.note)
    return out.model_copy(
        update={"note": note, "hazards": [hazard_out(hazard, principal) for hazard in view.hazards]}
    )


# -- notices -------------------------------------------------------------------------------------------


@router.get("/safety/stoves-past-life", operation_id="list_stoves_past_life")
async def list_stoves_past_life(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[StovePastLifeOut]:
    """A district's users whose stove is 8 years old or more today (city day), oldest stove first:
    the notice list for replacing them. A city-wide caller names the district (422
    ``gas.district_required`` otherwise)."""
    async with runtime.db() as session:
        found, next_cursor = await safety.stoves_past_life(
            session, district=district_scope(principal, district), limit=limit, cursor=cursor
        )
    items = [
        StovePastLifeOut(
            user=user_out(user, principal), life_ended_on=rules.stove_life_ends(user.stove_sold_on)
        )
        for user in found
        if user.stove_sold_on is not None
    ]
    return Page[StovePastLifeOut](items=items, next_cursor=next_cursor)


@router.get("/safety/cylinders-near-end-of-life", operation_id="list_cylinders_near_end_of_life")
async def list_cylinders_near_end_of_life(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    owner: Annotated[str | None, Query(max_length=32)] = None,
    months: Annotated[int, Query(ge=1, le=24)] = 6,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CylinderOut]:
    """Live cylinders whose service life ends within the next ``months`` months (and has not yet),
    soonest first. The whole city's: a cylinder belongs to a gas company, not to a district, so a
    district-bound caller is refused (403 ``auth.other_district``)."""
    require_city_wide(principal, "the list of cylinders near their end of life")
    async with runtime.db() as session:
        found, next_cursor = await safety.cylinders_near_end_of_life(
            session, owner=owner, months=months, limit=limit, cursor=cursor
        )
    return Page[CylinderOut](items=[cylinder_out(c, principal) for c in found], next_cursor=next_cursor)


# -- inspections ---------------------------------------------------------------------------------------


@router.post("/safety/inspections", operation_id="record_safety_inspection", status_code=201)
async def record_inspection(
    body: InspectionIn, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> InspectionOut:
    """Record a household safety inspection and the hazards it found (at most 20), in the user's
    district: 404 ``gas.unknown_user``, 422 ``gas.inspection_in_the_future``."""
    async with runtime.uow() as uow:
        view = await safety.record_inspection(uow, body, principal)
    response.headers["Location"] = f"/v1/safety/inspections/{view.inspection.id}"
    response.headers["ETag"] = etag(view.inspection.version)
    return inspection_out(view, principal)


@router.get("/safety/inspections/{inspection_id}", operation_id="get_safety_inspection")
async def get_inspection(
    inspection_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> InspectionOut:
    async with runtime.db() as session:
        view = await safety.get_inspection(session, inspection_id, principal)
    response.headers["ETag"] = etag(view.inspection.version)
    return inspection_out(view, principal)


@router.get("/users/{user_id}/inspections", operation_id="list_user_inspections")
async def list_user_inspections(
    user_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[InspectionOut]:
    """The user's safety inspections, newest first, each with its hazards."""
    async with runtime.db() as session:
        found, next_cursor = await safety.user_inspections(
            session, user_id, principal, limit=limit, cursor=cursor
        )
    return Page[InspectionOut](items=[inspection_out(v, principal) for v in found], next_cursor=next_cursor)


@router.post("/safety/hazards/{hazard_id}/rectify", operation_id="rectify_hazard")
async def rectify_hazard(
    hazard_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal, body: RectifyIn | None = None
) -> HazardOut:
    """Mark the hazard rectified now, by the caller: 409 ``gas.hazard_already_rectified`` the
    second time."""
    async with runtime.uow() as uow:
        hazard = await safety.rectify_hazard(uow, hazard_id, principal)
    return hazard_out(hazard, principal)


@router.get("/safety/hazards", operation_id="list_open_hazards")
async def list_open_hazards(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    overdue: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[HazardOut]:
    """Hazards not rectified yet, soonest deadline first; ``overdue=true`` only those past their
    ``rectify_by``, ``overdue=false`` only those still within it."""
    async with runtime.db() as session:
        found, next_cursor = await safety.open_hazards(
            session,
            district=district_scope(principal, district),
            overdue=overdue,
            limit=limit,
            cursor=cursor,
        )
    return Page[HazardOut](items=[hazard_out(h, principal) for h in found], next_cursor=next_cursor)


# -- outreach ------------------------------------------------------------------------------------------


@router.post("/safety/outreach", operation_id="record_outreach", status_code=201)
async def record_outreach(
    body: OutreachIn, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> OutreachOut:
    """Record a safety outreach activity once held (422 ``gas.outreach_in_the_future`` before)."""
    async with runtime.uow() as uow:
        activity = await safety.record_outreach(uow, body, principal)
    response.headers["Location"] = f"/v1/safety/outreach/{activity.id}"
    return OutreachOut.model_validate(activity)


@router.get("/safety/outreach", operation_id="list_outreach")
async def list_outreach(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictQuery = None,
    first_day: FirstDay = None,
    last_day: LastDay = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OutreachOut]:
    """Outreach activities held from ``from`` to ``to`` (both included), newest first."""
    async with runtime.reads() as session:
        found, next_cursor = await safety.list_outreach(
            session,
            district=district_scope(principal, district),
            first_day=first_day,
            last_day=last_day,
            limit=limit,
            cursor=cursor,
        )
    return Page[OutreachOut](items=[OutreachOut.model_validate(a) for a in found], next_cursor=next_cursor)


@router.get("/safety/outreach/figures", operation_id="outreach_figures")
async def outreach_figures(
    runtime: RuntimeDep, principal: CurrentPrincipal, first_day: FirstDay = None, last_day: LastDay = None
) -> OutreachFiguresOut:
    """The campaign's figures: per district, the activities held from ``from`` to ``to`` and their
    total attendance. A district-bound caller gets its own district's."""
    async with runtime.reads() as session:
        districts = await safety.outreach_figures(
            session, district=district_scope(principal), first_day=first_day, last_day=last_day
        )
    return OutreachFiguresOut(first_day=first_day, last_day=last_day, districts=districts)


@router.get("/safety/outreach/{activity_id}", operation_id="get_outreach")
async def get_outreach(
    activity_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> OutreachOut:
    async with runtime.reads() as session:
        return OutreachOut.model_validate(await safety.get_outreach(session, activity_id, principal))
