"""The catalogue and the work calendar over HTTP: everyone reads categories; admins edit both."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from sqlalchemy import select

from citygrid.auth import ADMIN_SCOPE, CurrentPrincipal, require_scope
from citygrid.clock import CityTime
from citygrid.db import transaction_time
from citygrid.errors import InvalidInput, NotFound
from citygrid.runtime import RuntimeDep
from citygrid.schemas import RequestModel
from services.case.catalogue import (
    CALENDAR,
    bump_reference_version,
    merge_calendar_documents,
    shipped_calendar_documents,
)
from services.case.context import Calendars
from services.case.domain.calendar import calendar_from_documents
from services.case.domain.categories import CategoryKind, Stage, StageLimit, UnitType
from services.case.models import CalendarYear, Category

router = APIRouter(prefix="/v1", tags=["catalogue"])


class CategoryNotFound(NotFound):
    code = "case.category_not_found"


class InvalidCalendar(InvalidInput):
    code = "case.invalid_calendar"


class CategoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    kind: CategoryKind
    big_class_code: str
    name_zh: str
    name_en: str
    limits: dict[Stage, StageLimit]
    urgent: bool
    default_unit_type: UnitType
    open311_service_code: str
    open311_group: str
    active: bool
    catalogue_version: str
    updated_at: CityTime


class CategoryList(BaseModel):
    items: list[CategoryOut]


class CategoryChange(RequestModel):
    """What an admin may change; codes and kinds are the catalogue's identity and stay."""

    name_zh: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    name_en: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    limits: dict[Stage, StageLimit] | None = None
    urgent: bool | None = None
    default_unit_type: UnitType | None = None
    active: bool | None = None


class CalendarYearOut(BaseModel):
    year: int
    source: str | None
    holidays: int
    makeup_workdays: int
    overridden: bool


@router.get("/categories", operation_id="list_categories")
async def list_categories(
    runtime: RuntimeDep, kind: CategoryKind | None = None, include_inactive: bool = False
) -> CategoryList:
    """The whole catalogue (about 150 small classes), in code order."""
    query = select(Category).order_by(Category.code)
    if kind is not None:
        query = query.where(Category.kind == kind.value)
    if not include_inactive:
        query = query.where(Category.active.is_(True))
    async with runtime.db() as session:
        rows = (await session.scalars(query)).all()
    return CategoryList(items=[CategoryOut.model_validate(row) for row in rows])


@router.get("/categories/{code}", operation_id="get_category")
async def get_category(
    code: Annotated[str, Path(pattern=r"^[12][0-9]{4}$")], runtime: RuntimeDep
) -> CategoryOut:
    async with runtime.db() as session:
        row = await session.get(Category, code)
    if row is None:
        raise CategoryNotFound(f"no category {code}")
    return CategoryOut.model_validate(row)


@router.patch("/admin/categories/{code}", operation_id="change_category")
async def change_category(
    code: Annotated[str, Path(pattern=r"^[12][0-9]{4}$")],
    body: CategoryChange,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
) -> CategoryOut:
    """Change names, stage limits, the default unit type, or retire a category (admin)."""
    require_scope(principal, ADMIN_SCOPE)
    changes = body.model_dump(exclude_none=True, mode="json")
    if "limits" in changes and set(changes["limits"]) != {stage.value for stage in Stage}:
        raise InvalidInput("limits must give all four stages: register, dispatch, handle, verify")
    async with runtime.uow() as uow:
        row = await uow.session.get(Category, code, with_for_update=True)
        if row is None:
            raise CategoryNotFound(f"no category {code}")
        for name, value in changes.items():
            setattr(row, name, value)
        # Categories are read per transaction (never cached): the edit is in force in every
        # replica once this commits.
        row.updated_at = await transaction_time(uow.session)
        await uow.session.flush()
        out = CategoryOut.model_validate(row)
    return out


@router.get("/admin/calendars", operation_id="list_calendar_years")
async def list_calendar_years(runtime: RuntimeDep, principal: CurrentPrincipal) -> list[CalendarYearOut]:
    require_scope(principal, ADMIN_SCOPE)
    async with runtime.db() as session:
        stored = {row.year: row.document for row in (await session.scalars(select(CalendarYear))).all()}
    documents = {int(d["year"]): d for d in shipped_calendar_documents()} | stored
    return [
        CalendarYearOut(
            year=year,
            source=document.get("source"),
            holidays=sum(len(h["dates"]) for h in document.get("holidays", [])),
            makeup_workdays=len(document.get("makeup_workdays", [])),
            overridden=year in stored,
        )
        for year, document in sorted(documents.items())
    ]


@router.put("/admin/calendars/{year}", operation_id="put_calendar_year")
async def put_calendar_year(
    year: Annotated[int, Path(ge=2000, le=2100)],
    document: Annotated[dict[str, Any], Body()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    calendars: Calendars,
) -> CalendarYearOut:
    """Set a year's public holidays and make-up working days, as the State Council publishes them (admin)."""
    require_scope(principal, ADMIN_SCOPE)
    if document.get("year") != year:
        raise InvalidCalendar(f"the document's year must be {year}")
    try:
        calendar_from_documents([document])
        merge_calendar_documents(shipped_calendar_documents(), [document])
    except (ValueError, ValidationError) as error:
        raise InvalidCalendar(str(error)) from None
    async with runtime.uow() as uow:
        row = await uow.session.get(CalendarYear, year, with_for_update=True)
        now = await uow.now()
        if row is None:
            uow.session.add(CalendarYear(year=year, document=document, updated_at=now))
        else:
            row.document = document
            row.updated_at = now
        # Every other replica sees the new version at its next refresh and reloads the calendar.
        await bump_reference_version(uow.session, CALENDAR)
    await calendars.reload(runtime.db)  # this replica: at once
    return CalendarYearOut(
        year=year,
        source=document.get("source"),
        holidays=sum(len(h["dates"]) for h in document.get("holidays", [])),
        makeup_workdays=len(document.get("makeup_workdays", [])),
        overridden=True,
    )
