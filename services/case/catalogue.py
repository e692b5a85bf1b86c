"""The category catalogue and the work calendar as this city runs them: shipped defaults that
admins can change in the database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.errors import InvalidInput
from services.case.domain import calendar as work_calendar
from services.case.domain.calendar import WorkCalendar, calendar_from_documents
from services.case.domain.categories import Stage, StageLimit, load_catalogue
from services.case.models import CalendarYear, Category

SHIPPED_CALENDARS = Path(work_calendar.__file__).resolve().parents[1] / "data" / "calendars"


class UnknownCategory(InvalidInput):
    code = "case.unknown_category"
    title = "Unknown category"


async def sync_shipped_catalogue(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Add the shipped categories this database does not have yet; never overwrite an admin's edit."""
    catalogue = load_catalogue()
    rows = [
        {
            "code": c.code,
            "kind": c.kind.value,
            "big_class_code": c.big_class_code,
            "name_zh": c.name_zh,
            "name_en": c.name_en,
            "limits": {stage.value: limit.model_dump(mode="json") for stage, limit in c.limits.items()},
            "urgent": c.urgent,
            "default_unit_type": c.default_unit_type.value,
            "open311_service_code": c.open311_service_code,
            "open311_group": c.open311_group,
            "active": True,
            "catalogue_version": catalogue.version,
        }
        for c in catalogue.categories
    ]
    async with sessions() as session, session.begin():
        result = await session.execute(insert(Category).values(rows).on_conflict_do_nothing())
    return int(getattr(result, "rowcount", 0) or 0)


async def category_for_report(session: AsyncSession, code: str) -> Category:
    category = await session.get(Category, code)
    if category is None or not category.active:
        raise UnknownCategory(f"no active category {code}; see GET /v1/categories", category_code=code)
    return category


def stage_limits(category: Category) -> dict[Stage, StageLimit]:
    return {Stage(stage): StageLimit.model_validate(limit) for stage, limit in category.limits.items()}


def shipped_calendar_documents() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(SHIPPED_CALENDARS.glob("*.json"))]


def merge_calendar_documents(
    shipped: Sequence[dict[str, Any]], stored: Sequence[dict[str, Any]]
) -> WorkCalendar:
    """The shipped years, each replaced by the database's document for the same year if there is one."""
    by_year = {int(document["year"]): document for document in shipped}
    by_year.update({int(document["year"]): document for document in stored})
    return calendar_from_documents(by_year[year] for year in sorted(by_year))


@dataclass
class CalendarHolder:
    """The calendar every deadline is computed with, reloaded when an admin changes a year."""

    calendar: WorkCalendar

    async def reload(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session:
            stored = [row.document for row in (await session.scalars(select(CalendarYear))).all()]
        self.calendar = merge_calendar_documents(shipped_calendar_documents(), stored)
