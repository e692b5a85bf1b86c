"""Household gas safety: the notice lists (stoves past their life, cylinders near their end), household
safety inspections (入户安检) with the hazards they find and their rectification, and the outreach
activities of the bureau's safety campaign.

Every day here is the city's (Asia/Shanghai) day of the database's clock, as for the fill rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

from sqlalchemy import Select, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.clock import within_range
from citygrid.db import UnitOfWork, transaction_time
from citygrid.errors import Conflict, InvalidInput, NotFound
from citygrid.ids import new_id
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from contract.common import GUANGZHOU_DISTRICTS
from services.gas import registry
from services.gas.domain import rules
from services.gas.domain.lifecycle import CylinderStatus
from services.gas.models import Cylinder, Enterprise, GasUser, Hazard, OutreachActivity, SafetyInspection
from services.gas.safety_schemas import DistrictOutreach, InspectionIn, OutreachIn

# An inspector's handset clock runs a little ahead of the database's; more than this is a mistake.
FUTURE_TOLERANCE: Final = timedelta(minutes=10)
# Statuses of a cylinder out of service for good: no notice is sent for them.
RETIRED: Final = (CylinderStatus.SCRAPPED.value, CylinderStatus.VOID.value)


class UnknownInspection(NotFound):
    code = "gas.unknown_inspection"


class UnknownHazard(NotFound):
    code = "gas.unknown_hazard"


class UnknownOutreach(NotFound):
    code = "gas.unknown_outreach"


class HazardAlreadyRectified(Conflict):
    code = "gas.hazard_already_rectified"


class InspectionInTheFuture(InvalidInput):
    code = "gas.inspection_in_the_future"


class OutreachInTheFuture(InvalidInput):
    code = "gas.outreach_in_the_future"


class InvalidPeriod(InvalidInput):
    code = "gas.invalid_period"


class DistrictRequired(InvalidInput):
    code = "gas.district_required"


@dataclass(frozen=True)
class InspectionView:
    inspection: SafetyInspection
    hazards: list[Hazard]


def _uuid(raw: object) -> uuid.UUID:
    return uuid.UUID(str(raw))


def _aware_time(raw: object) -> datetime:
    moment = datetime.fromisoformat(str(raw))
    if moment.tzinfo is None:
        raise ValueError("a cursor's time carries its offset")
    return within_range(moment)  # year 1 at +05:00 would overflow on its way to the database


async def city_today(session: AsyncSession) -> date:
    return registry.rules_today(await transaction_time(session))


def check_period(first_day: date | None, last_day: date | None) -> None:
    if first_day is not None and last_day is not None and first_day > last_day:
        raise InvalidPeriod(f"'from' ({first_day.isoformat()}) is after 'to' ({last_day.isoformat()})")


# -- notices -------------------------------------------------------------------------------------------


def stove_sold_cutoff(today: date) -> date:
    """The last sale day of a stove past its life today: ``stove_past_life(sold_on, today)`` exactly
    when ``sold_on <= stove_sold_cutoff(today)``, so the list is one range of ix_gas_users_stove."""
    cutoff = rules.add_years(today, -rules.STOVE_LIFE_YEARS)
    # add_years clamps 29 February, so the two can differ by a day around a leap day; settle it
    # with the rule itself rather than a second copy of the calendar arithmetic.
    while not rules.stove_past_life(cutoff, today):
        cutoff -= timedelta(days=1)
    while rules.stove_past_life(cutoff + timedelta(days=1), today):
        cutoff += timedelta(days=1)
    return cutoff


async def stoves_past_life(
    session: AsyncSession, *, district: str | None, limit: int, cursor: str | None
) -> tuple[list[GasUser], str | None]:
    """A district's users whose stove is 8 years old or more today, oldest stove first.

    One district at a time: the street offices work the list district by district, and the index
    (district_code, stove_sold_on) gives one district's rows in order; across the city every page
    would sort the whole city's old stoves."""
    if district is None:
        raise DistrictRequired("name the district (?district=): the notice list is one district's")
    cutoff = stove_sold_cutoff(await city_today(session))
    query = (
        select(GasUser)
        .where(GasUser.district_code == district, GasUser.stove_sold_on <= cutoff)
        .order_by(GasUser.stove_sold_on, GasUser.id)
        .limit(limit + 1)
    )
    if cursor:
        sold_on, user_id = decode_cursor(cursor, 2)
        after = (cursor_value(date.fromisoformat, sold_on), cursor_value(_uuid, user_id))
        query = query.where(tuple_(GasUser.stove_sold_on, GasUser.id) > tuple_(*after))
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        assert last.stove_sold_on is not None  # the query's condition
        next_cursor = encode_cursor(last.stove_sold_on.isoformat(), str(last.id))
    return found[:limit], next_cursor


async def cylinders_near_end_of_life(
    session: AsyncSession, *, owner: str | None, months: int, limit: int, cursor: str | None
) -> tuple[list[Cylinder], str | None]:
    """Live cylinders still in service whose end of life falls within the next ``months`` calendar
    months (``rules.near_end_of_life``), soonest first: their owners replace them in time."""
    if owner is not None and await session.get(Enterprise, owner) is None:
        raise registry.UnknownEnterprise(f"no enterprise {owner}")
    today = await city_today(session)
    query = (
        select(Cylinder)
        .where(
            Cylinder.end_of_life > today,
            Cylinder.end_of_life <= rules.add_months(today, months),
            Cylinder.status.not_in(RETIRED),
        )
        .order_by(Cylinder.end_of_life, Cylinder.code)
        .limit(limit + 1)
    )
    if owner is not None:
        query = query.where(Cylinder.owner_code == owner)
    if cursor:
        end, code = decode_cursor(cursor, 2)
        after = (cursor_value(date.fromisoformat, end), cursor_value(str, code))
        query = query.where(tuple_(Cylinder.end_of_life, Cylinder.code) > tuple_(*after))
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.end_of_life.isoformat(), last.code)
    return found[:limit], next_cursor


# -- inspections ---------------------------------------------------------------------------------------


async def record_inspection(uow: UnitOfWork, item: InspectionIn, principal: Principal) -> InspectionView:
    """Record an inspection of a user's premises and every hazard it found, in one transaction. The
    inspection and its hazards belong to the user's district."""
    session = uow.session
    user = await registry.get_user(session, item.user_id, principal)
    now = await uow.now()
    if item.inspected_at > now + FUTURE_TOLERANCE:
        raise InspectionInTheFuture("an inspection's time is later than now")
    inspection = SafetyInspection(
        id=new_id(),
        user_id=user.id,
        district_code=user.district_code,
        inspected_at=item.inspected_at,
        inspector=item.inspector,
        note=item.note,
        version=1,
        created_at=now,
    )
    hazards = [
        Hazard(
            id=new_id(),
            inspection_id=inspection.id,
            district_code=user.district_code,
            kind=hazard.kind.value,
            description=hazard.description,
            rectify_by=hazard.rectify_by,
        )
        for hazard in item.hazards
    ]
    # The inspection's row first: with no relationship() between the two, one flush does not
    # order the inserts by the foreign key.
    session.add(inspection)
    await session.flush()
    session.add_all(hazards)
    await session.flush()
    # In the order the inspection is read back in (``_hazards_of``).
    return InspectionView(inspection, sorted(hazards, key=lambda found: (found.rectify_by, found.id)))


async def _hazards_of(
    session: AsyncSession, inspection_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Hazard]]:
    found: dict[uuid.UUID, list[Hazard]] = {key: [] for key in inspection_ids}
    if inspection_ids:
        query = (
            select(Hazard)
            .where(Hazard.inspection_id.in_(inspection_ids))
            .order_by(Hazard.rectify_by, Hazard.id)
        )
        for hazard in (await session.scalars(query)).all():
            found[hazard.inspection_id].append(hazard)
    return found


async def get_inspection(
    session: AsyncSession, inspection_id: uuid.UUID, principal: Principal
) -> InspectionView:
    inspection = await session.get(SafetyInspection, inspection_id)
    if inspection is None:
        raise UnknownInspection(f"no safety inspection {inspection_id}")
    require_district(principal, inspection.district_code)
    hazards = await _hazards_of(session, [inspection.id])
    return InspectionView(inspection, hazards[inspection.id])


async def user_inspections(
    session: AsyncSession, user_id: uuid.UUID, principal: Principal, *, limit: int, cursor: str | None
) -> tuple[list[InspectionView], str | None]:
    """The user's inspections, newest first, each with its hazards."""
    await registry.get_user(session, user_id, principal)
    query = (
        select(SafetyInspection)
        .where(SafetyInspection.user_id == user_id)
        .order_by(SafetyInspection.inspected_at.desc(), SafetyInspection.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        at, inspection_id = decode_cursor(cursor, 2)
        before = (cursor_value(_aware_time, at), cursor_value(_uuid, inspection_id))
        query = query.where(tuple_(SafetyInspection.inspected_at, SafetyInspection.id) < tuple_(*before))
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.inspected_at.isoformat(), str(last.id))
    page = found[:limit]
    hazards = await _hazards_of(session, [inspection.id for inspection in page])
    return [InspectionView(inspection, hazards[inspection.id]) for inspection in page], next_cursor


async def rectify_hazard(uow: UnitOfWork, hazard_id: uuid.UUID, principal: Principal) -> Hazard:
    """Mark a hazard rectified, once: under the hazard's row lock, so two officers pressing it on
    two replicas record it once and the second gets 409."""
    session = uow.session
    hazard = await session.scalar(select(Hazard).where(Hazard.id == hazard_id).with_for_update())
    if hazard is None:
        raise UnknownHazard(f"no hazard {hazard_id}")
    require_district(principal, hazard.district_code)
    if hazard.rectified_at is not None:
        raise HazardAlreadyRectified(
            f"hazard {hazard_id} was rectified already", rectified_at=hazard.rectified_at.isoformat()
        )
    hazard.rectified_at = await uow.now()
    hazard.rectified_by = principal.subject
    # The inspection is shown with its hazards: it changed too.
    await session.execute(
        update(SafetyInspection)
        .where(SafetyInspection.id == hazard.inspection_id)
        .values(version=SafetyInspection.version + 1)
    )
    await session.flush()
    return hazard


async def open_hazards(
    session: AsyncSession, *, district: str | None, overdue: bool | None, limit: int, cursor: str | None
) -> tuple[list[Hazard], str | None]:
    """Hazards not rectified yet, soonest deadline first; ``overdue``: only those past their
    deadline (True) or only those still within it (False)."""
    query: Select[Hazard] = (
        select(Hazard)
        .where(Hazard.rectified_at.is_(None))
        .order_by(Hazard.rectify_by, Hazard.id)
        .limit(limit + 1)
    )
    if district is not None:
        query = query.where(Hazard.district_code == district)
    if overdue is not None:
        today = await city_today(session)
        query = query.where(Hazard.rectify_by < today if overdue else Hazard.rectify_by >= today)
    if cursor:
        rectify_by, hazard_id = decode_cursor(cursor, 2)
        after = (cursor_value(date.fromisoformat, rectify_by), cursor_value(_uuid, hazard_id))
        query = query.where(tuple_(Hazard.rectify_by, Hazard.id) > tuple_(*after))
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.rectify_by.isoformat(), str(last.id))
    return found[:limit], next_cursor


# -- outreach ------------------------------------------------------------------------------------------


async def record_outreach(uow: UnitOfWork, item: OutreachIn, principal: Principal) -> OutreachActivity:
    require_district(principal, item.district_code)
    now = await uow.now()
    if item.held_on > registry.rules_today(now):
        raise OutreachInTheFuture("an outreach activity is recorded once it was held, not before")
    activity = OutreachActivity(
        id=new_id(),
        district_code=item.district_code,
        street=item.street,
        held_on=item.held_on,
        place=item.place,
        topic=item.topic,
        attendance=item.attendance,
        organiser=item.organiser,
        recorded_by=principal.subject,
        created_at=now,
    )
    uow.session.add(activity)
    await uow.session.flush()
    return activity


async def get_outreach(
    session: AsyncSession, activity_id: uuid.UUID, principal: Principal
) -> OutreachActivity:
    activity = await session.get(OutreachActivity, activity_id)
    if activity is None:
        raise UnknownOutreach(f"no outreach activity {activity_id}")
    require_district(principal, activity.district_code)
    return activity


async def list_outreach(
    session: AsyncSession,
    *,
    district: str | None,
    first_day: date | None,
    last_day: date | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[OutreachActivity], str | None]:
    """Outreach activities held in the period (both days included), newest first."""
    check_period(first_day, last_day)
    query = (
        select(OutreachActivity)
        .order_by(OutreachActivity.held_on.desc(), OutreachActivity.id.desc())
        .limit(limit + 1)
    )
    if district is not None:
        query = query.where(OutreachActivity.district_code == district)
    if first_day is not None:
        query = query.where(OutreachActivity.held_on >= first_day)
    if last_day is not None:
        query = query.where(OutreachActivity.held_on <= last_day)
    if cursor:
        held_on, activity_id = decode_cursor(cursor, 2)
        before = (cursor_value(date.fromisoformat, held_on), cursor_value(_uuid, activity_id))
        query = query.where(tuple_(OutreachActivity.held_on, OutreachActivity.id) < tuple_(*before))
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.held_on.isoformat(), str(last.id))
    return found[:limit], next_cursor


async def outreach_figures(
    session: AsyncSession, *, district: str | None, first_day: date | None, last_day: date | None
) -> list[DistrictOutreach]:
    """Per district, the activities held in the period and their total attendance; a district that
    held none is listed with zeros (the campaign's figures show who has not started)."""
    check_period(first_day, last_day)
    query = select(
        OutreachActivity.district_code,
        func.count(),
        func.coalesce(func.sum(OutreachActivity.attendance), 0),
    ).group_by(OutreachActivity.district_code)
    if district is not None:
        query = query.where(OutreachActivity.district_code == district)
    if first_day is not None:
        query = query.where(OutreachActivity.held_on >= first_day)
    if last_day is not None:
        query = query.where(OutreachActivity.held_on <= last_day)
    counted = {
        code: (activities, attendance)
        for code, activities, attendance in (await session.execute(query)).all()
    }
    districts = {district} if district is not None else set(GUANGZHOU_DISTRICTS) | set(counted)
    return [
        DistrictOutreach(
            district_code=code,
            activities=counted.get(code, (0, 0))[0],
            attendance=counted.get(code, (0, 0))[1],
        )
        for code in sorted(districts)
    ]
