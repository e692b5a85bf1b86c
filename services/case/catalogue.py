"""The category catalogue and the work calendar as this city runs them: shipped defaults that
admins can change in the database.

Categories are read from the database by every transaction that needs one, so an edit is in force
in every replica at its commit. The calendar is held in memory (every deadline uses it); an edit
bumps the ``calendar`` reference version, which every replica polls (``CalendarHolder.refresh_if_changed``,
a periodic job) and reloads on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.db import remember_transaction_time
from citygrid.errors import InvalidInput
from services.case.domain import calendar as work_calendar
from services.case.domain.calendar import WorkCalendar, calendar_from_documents
from services.case.domain.categories import Stage, StageLimit, load_catalogue
from services.case.models import CalendarYear, Category, ReferenceVersion

SHIPPED_CALENDARS = Path(work_calendar.__file__).resolve().parents[1] / "data" / "calendars"
CALENDAR = "calendar"  # its reference version's name


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


CATEGORY_AND_NOW = select(Category, func.now()).where(Category.code == bindparam("code"))


async def category_for_report(session: AsyncSession, code: str) -> Category:
    """The active category, read in the report's transaction (an admin's edit is in force in every
    replica once it commits); the transaction's time comes with it, in the same round trip."""
    row = (await session.execute(CATEGORY_AND_NOW, {"code": code})).one_or_none()
    if row is None or not row[0].active:
        raise UnknownCategory(f"no active category {code}; see GET /v1/categories", category_code=code)
    category, now = row
    remember_transaction_time(session, now)
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


async def bump_reference_version(session: AsyncSession, name: str) -> int:
    """Count an edit of ``name`` in the editing transaction; returns the new version.

    The row lock it takes makes concurrent edits take turns, so versions grow in commit order and a
    replica that has seen version n has seen every edit up to the n-th.
    """
    statement = (
        insert(ReferenceVersion)
        .values(name=name, version=1)
        .on_conflict_do_update(
            index_elements=[ReferenceVersion.name],
            set_={"version": ReferenceVersion.version + 1, "changed_at": text("now()")},
        )
        .returning(ReferenceVersion.version)
    )
    return int((await session.execute(statement)).scalar_one())


async def reference_version(session: AsyncSession, name: str) -> int:
    """The current version of ``name`` (0 before its first edit): one primary-key read."""
    found = await session.scalar(select(ReferenceVersion.version).where(ReferenceVersion.name == name))
    return int(found or 0)


@dataclass
class CalendarHolder:
    """The calendar every deadline is computed with, reloaded when an admin changes a year, in this
    replica at once and in the others at their next refresh."""

    calendar: WorkCalendar
    version: int | None = None  # the reference version the calendar was read at; None: shipped only

    async def reload(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            # One snapshot for the version and the years, so an edit committing meanwhile is either
            # wholly in this calendar or seen as a newer version at the next refresh.
            await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            version = await reference_version(session, CALENDAR)
            stored = [row.document for row in (await session.scalars(select(CalendarYear))).all()]
        calendar = merge_calendar_documents(shipped_calendar_documents(), stored)
        # A slower reload of an older snapshot never replaces a newer calendar.
        if self.version is None or version >= self.version:
            self.calendar, self.version = calendar, version

    async def refresh_if_changed(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Reload when another replica changed the calendar; 1 when it did, else 0 (a periodic
        job's count). Costs one primary-key read when nothing changed."""
        async with sessions() as session:
            version = await reference_version(session, CALENDAR)
        if version == self.version:
            return 0
        await self.reload(sessions)
        return 1
