"""Responsible units and dispatch rules in the case database: shipped defaults, look-ups, checks."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from citygrid.auth import Principal
from citygrid.errors import InvalidInput
from services.case.domain.dispatch_rules import Place, Rule, best_rule, category_prefixes
from services.case.domain.units import shipped_units
from services.case.domain.workflow import Role
from services.case.models import DispatchRule, Unit

# Who takes the steps the platform takes by itself (automatic dispatch, automatic merge).
SYSTEM = Principal(
    subject="system:case", kind="service", name="CityGrid case service", roles=frozenset({Role.SYSTEM})
)


class UnknownUnit(InvalidInput):
    code = "case.unknown_unit"
    title = "Unknown unit"


class InactiveUnit(InvalidInput):
    code = "case.inactive_unit"
    title = "Inactive unit"


async def sync_shipped_units(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Add the shipped units this database does not have yet; never overwrite an admin's edit."""
    rows = [
        {
            "code": unit.code,
            "name": unit.name,
            "type": unit.type.value,
            "district_code": unit.district_code,
            "parent_code": unit.parent_code,
            "active": True,
        }
        for unit in shipped_units()
    ]
    async with sessions() as session, session.begin():
        result = await session.execute(insert(Unit).values(rows).on_conflict_do_nothing())
    return int(getattr(result, "rowcount", 0) or 0)


async def require_active_unit(session: AsyncSession, code: str) -> Unit:
    """The unit a case is dispatched to: it must exist and be active."""
    unit = await session.get(Unit, code)
    if unit is None:
        raise UnknownUnit(f"no unit {code}; see GET /v1/units", unit=code)
    if not unit.active:
        raise InactiveUnit(f"unit {code} is inactive; dispatch to another unit", unit=code)
    return unit


async def matching_rule(session: AsyncSession, category_code: str, place: Place) -> Rule | None:
    """The most specific active rule for this category and place whose unit is active, if any."""
    rows = await session.execute(
        select(DispatchRule.category_code, DispatchRule.area_code, DispatchRule.unit_code)
        .join(Unit, Unit.code == DispatchRule.unit_code)
        .where(
            DispatchRule.active.is_(True),
            Unit.active.is_(True),
            DispatchRule.category_code.in_(category_prefixes(category_code)),
            DispatchRule.area_code.in_(place.area_prefixes()),
        )
    )
    return best_rule((Rule(*row) for row in rows), category_code, place)
