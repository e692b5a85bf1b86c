"""Responsible units, dispatch rules and the dispatcher's queue over HTTP.

Everyone with read access sees units, rules and the queue; admins change units and rules.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, district_scope, require_scope
from citygrid.clock import CityTime, within_range
from citygrid.db import transaction_time
from citygrid.errors import Conflict, InvalidInput, NotFound
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from citygrid.schemas import RequestModel
from contract.case import CaseStatus
from contract.common import GUANGZHOU_DISTRICTS, DistrictCode, KnownDistrict
from services.case.api import case_out
from services.case.domain.categories import UnitType
from services.case.domain.dispatch_rules import AREA_RULE_PATTERN, CATEGORY_RULE_PATTERN
from services.case.domain.units import hierarchy_problem
from services.case.models import Case, Category, DispatchRule, Unit
from services.case.schemas import CaseOut, CategoryCode
from services.case.units import UnknownUnit

router = APIRouter(prefix="/v1", tags=["units and dispatch"])

UNIT_CODE_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
UnitCodePath = Annotated[str, Path(min_length=1, max_length=100, pattern=UNIT_CODE_PATTERN)]


class UnitNotFound(NotFound):
    code = "case.unit_not_found"


class InvalidUnit(InvalidInput):
    code = "case.invalid_unit"


class RuleNotFound(NotFound):
    code = "case.dispatch_rule_not_found"


class InvalidRule(InvalidInput):
    code = "case.invalid_dispatch_rule"


class DuplicateRule(Conflict):
    code = "case.duplicate_dispatch_rule"
    title = "Duplicate dispatch rule"


class UnitConflict(Conflict):
    code = "case.unit_conflict"
    title = "Unit conflict"


class UnitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    name: str
    type: UnitType
    district_code: str | None
    parent_code: str | None
    active: bool
    updated_at: CityTime


class UnitIn(RequestModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    type: UnitType
    district_code: KnownDistrict | None = None
    parent_code: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    active: bool = True


class RuleIn(RequestModel):
    category_code: Annotated[str, StringConstraints(pattern=CATEGORY_RULE_PATTERN)] = Field(
        description="A small class (5 digits, e.g. 20106) or a big class (its 3-digit prefix, e.g. 201)."
    )
    area_code: Annotated[str, StringConstraints(pattern=AREA_RULE_PATTERN)] = Field(
        default="",
        description="A district (6 digits), street (9), community (12) or grid cell (15); empty for the whole city.",
    )
    unit_code: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    category_code: str
    area_code: str
    unit_code: str
    active: bool
    created_at: CityTime


class RuleList(BaseModel):
    items: list[RuleOut]


# -- units ---------------------------------------------------------------------------------------


@router.get("/units", operation_id="list_units")
async def list_units(
    runtime: RuntimeDep,
    type: UnitType | None = None,
    district: DistrictCode | None = None,
    parent: Annotated[str | None, Query(max_length=100, pattern=UNIT_CODE_PATTERN)] = None,
    include_inactive: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[UnitOut]:
    """Responsible units in code order; ``parent`` lists a unit's children."""
    query = select(Unit).order_by(Unit.code).limit(limit + 1)
    if type is not None:
        query = query.where(Unit.type == type.value)
    if district is not None:
        query = query.where(Unit.district_code == district)
    if parent is not None:
        query = query.where(Unit.parent_code == parent)
    if not include_inactive:
        query = query.where(Unit.active.is_(True))
    if cursor is not None:
        (raw,) = decode_cursor(cursor, 1)
        query = query.where(Unit.code > cursor_value(str, raw))
    async with runtime.db() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(rows[limit - 1].code) if len(rows) > limit else None
    return Page[UnitOut](items=[UnitOut.model_validate(row) for row in rows[:limit]], next_cursor=next_cursor)


@router.get("/units/{code}", operation_id="get_unit")
async def get_unit(code: UnitCodePath, runtime: RuntimeDep) -> UnitOut:
    async with runtime.db() as session:
        row = await session.get(Unit, code)
    if row is None:
        raise UnitNotFound(f"no unit {code}")
    return UnitOut.model_validate(row)


@router.put("/admin/units/{code}", operation_id="put_unit")
async def put_unit(
    code: UnitCodePath, body: UnitIn, runtime: RuntimeDep, principal: CurrentPrincipal, response: Response
) -> UnitOut:
    """Create or change a unit (admin). Set ``active: false`` to retire it: units are never deleted,
    since case history names them; a retired unit cannot be dispatched to and its rules stop matching."""
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.uow() as uow:
        session = uow.session
        parents = {
            unit: parent for unit, parent in (await session.execute(select(Unit.code, Unit.parent_code)))
        }
        problem = hierarchy_problem(parents, code, body.parent_code)
        if problem is not None:
            raise InvalidUnit(
                problem, errors=[{"loc": ["body", "parent_code"], "type": "unit.parent", "msg": problem}]
            )
        now = await transaction_time(session)
        row = await session.get(Unit, code, with_for_update=True)
        if row is None:
            row = Unit(code=code)
            session.add(row)
            response.status_code = 201
        row.name, row.type, row.district_code = body.name, body.type.value, body.district_code
        row.parent_code, row.active, row.updated_at = body.parent_code, body.active, now
        try:
            await session.flush()
        except IntegrityError:  # the same code created concurrently
            raise UnitConflict(f"unit {code} was changed concurrently; retry") from None
        out = UnitOut.model_validate(row)
    return out


# -- dispatch rules ------------------------------------------------------------------------------


@router.get("/dispatch-rules", operation_id="list_dispatch_rules")
async def list_dispatch_rules(
    runtime: RuntimeDep,
    category: Annotated[str | None, Query(pattern=CATEGORY_RULE_PATTERN)] = None,
    unit: Annotated[str | None, Query(max_length=100, pattern=UNIT_CODE_PATTERN)] = None,
) -> RuleList:
    """Every dispatch rule, by category then area (a city has at most a few thousand)."""
    query = select(DispatchRule).order_by(DispatchRule.category_code, DispatchRule.area_code)
    if category is not None:
        query = query.where(DispatchRule.category_code == category)
    if unit is not None:
        query = query.where(DispatchRule.unit_code == unit)
    async with runtime.db() as session:
        rows = (await session.scalars(query)).all()
    return RuleList(items=[RuleOut.model_validate(row) for row in rows])


@router.post("/admin/dispatch-rules", status_code=201, operation_id="create_dispatch_rule")
async def create_dispatch_rule(body: RuleIn, runtime: RuntimeDep, principal: CurrentPrincipal) -> RuleOut:
    """Dispatch cases of this category in this area to this unit automatically (admin).

    When a case is registered, the most specific matching rule wins: a small class beats its big
    class, then the longer area prefix (grid > community > street > district > city) wins.
    """
    require_scope(principal, ADMIN_SCOPE)
    if body.area_code and body.area_code[:6] not in GUANGZHOU_DISTRICTS:
        raise InvalidRule(
            f"area {body.area_code} is not in one of the city's districts",
            errors=[
                {"loc": ["body", "area_code"], "type": "rule.unknown_district", "msg": "unknown district"}
            ],
        )
    async with runtime.uow() as uow:
        session = uow.session
        known_category = await session.scalar(
            select(func.count()).select_from(Category).where(Category.code.startswith(body.category_code))
        )
        if not known_category:
            raise InvalidRule(
                f"no category {body.category_code} in the catalogue",
                errors=[
                    {"loc": ["body", "category_code"], "type": "rule.unknown_category", "msg": "unknown"}
                ],
            )
        if await session.get(Unit, body.unit_code) is None:
            raise UnknownUnit(f"no unit {body.unit_code}; see GET /v1/units", unit=body.unit_code)
        clash = await session.scalar(
            select(DispatchRule).where(
                DispatchRule.category_code == body.category_code, DispatchRule.area_code == body.area_code
            )
        )
        if clash is not None:
            raise DuplicateRule(
                f"a rule for {body.category_code} in '{body.area_code}' exists already; delete it first",
                rule_id=str(clash.id),
            )
        row = DispatchRule(
            category_code=body.category_code, area_code=body.area_code, unit_code=body.unit_code, active=True
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:  # the same rule created concurrently
            raise DuplicateRule(
                f"a rule for {body.category_code} in '{body.area_code}' exists already; delete it first"
            ) from None
        await session.refresh(row)
        out = RuleOut.model_validate(row)
    return out


@router.delete("/admin/dispatch-rules/{rule_id}", status_code=204, operation_id="delete_dispatch_rule")
async def delete_dispatch_rule(rule_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal) -> None:
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.uow() as uow:
        row = await uow.session.get(DispatchRule, rule_id, with_for_update=True)
        if row is None:
            raise RuleNotFound(f"no dispatch rule {rule_id}")
        await uow.session.delete(row)


# -- the dispatcher's queue ----------------------------------------------------------------------


@router.get("/dispatch-queue", operation_id="dispatch_queue")
async def dispatch_queue(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    district: DistrictCode | None = None,
    street: Annotated[str | None, Query(pattern=r"^[0-9]{9}$")] = None,
    category: Annotated[CategoryCode | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CaseOut]:
    """Registered cases no rule dispatched (or that a unit returned), oldest first: the dispatcher's work."""
    district = district_scope(principal, district)
    query = (
        select(Case)
        .where(Case.status == CaseStatus.REGISTERED)
        .order_by(Case.created_at, Case.id)
        .limit(limit + 1)
    )
    if district is not None:
        query = query.where(Case.district_code == district)
    if street is not None:
        query = query.where(Case.street_code == street)
    if category is not None:
        query = query.where(Case.category_code == category)
    if cursor is not None:
        created, last_id = decode_cursor(cursor, 2)
        after_time = cursor_value(lambda raw: within_range(datetime.fromisoformat(str(raw))), created)
        after_id = cursor_value(lambda raw: uuid.UUID(str(raw)), last_id)
        query = query.where(
            or_(Case.created_at > after_time, and_(Case.created_at == after_time, Case.id > after_id))
        )
    async with runtime.db() as session:
        rows = list((await session.scalars(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last.created_at.isoformat(), str(last.id))
    return Page[CaseOut](items=[case_out(case, principal) for case in rows[:limit]], next_cursor=next_cursor)
