"""The registry: enterprises and their licences, entrustments, station locks, users and cylinders.

A cylinder's code is its identity for life: registered once, bound to one owning company, and never
given to another cylinder (a scrapped or voided code stays in the table, refused by the fill check).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, literal, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal, require_district
from citygrid.db import UnitOfWork, transaction_time
from citygrid.errors import Conflict, InvalidInput, NotFound
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from citygrid.schemas import ImportResult, Refusal
from services.gas.domain import rules
from services.gas.models import Cylinder, Enterprise, EnterpriseKind, Entrustment, GasUser, StationLock
from services.gas.schemas import CylinderIn, EnterpriseIn, GasUserIn


class UnknownEnterprise(NotFound):
    code = "gas.unknown_enterprise"


class UnknownCylinder(NotFound):
    code = "gas.unknown_cylinder"


class UnknownUser(NotFound):
    code = "gas.unknown_user"


class NotAStation(InvalidInput):
    code = "gas.not_a_station"
    status = 422


class NotACompany(InvalidInput):
    code = "gas.not_a_company"
    status = 422


class AlreadyLocked(Conflict):
    code = "gas.station_already_locked"


class NotLocked(Conflict):
    code = "gas.station_not_locked"


ENTERPRISE_COLUMNS = (
    "kind",
    "name",
    "company_code",
    "licence_number",
    "licence_valid_until",
    "district_code",
    "lon",
    "lat",
)
ONE_ENTERPRISE = select(Enterprise).where(Enterprise.code == bindparam("code"))
ENTRUSTED_BY = (
    select(Entrustment.company_code)
    .where(
        Entrustment.station_code == bindparam("code"),
        or_(Entrustment.valid_until.is_(None), Entrustment.valid_until >= bindparam("today")),
    )
    .order_by(Entrustment.company_code)
)


@dataclass(frozen=True)
class EnterpriseView:
    enterprise: Enterprise
    entrusted_by: list[str]


def _enterprise_row(item: EnterpriseIn) -> dict[str, Any]:
    return {
        "code": item.code,
        "kind": item.kind.value,
        "name": item.name,
        "company_code": item.company_code,
        "licence_number": item.licence_number,
        "licence_valid_until": item.licence_valid_until,
        "district_code": item.district_code,
        "lon": item.location.lon if item.location else None,
        "lat": item.location.lat if item.location else None,
    }


async def gas_companies(session: AsyncSession, among: set[str] | None = None) -> set[str]:
    """The codes of the registered gas companies (of ``among``, when given)."""
    query = select(Enterprise.code).where(Enterprise.kind == EnterpriseKind.GAS_COMPANY.value)
    if among is not None:
        query = query.where(Enterprise.code.in_(among))
    return set((await session.scalars(query)).all())


async def import_enterprises(session: AsyncSession, items: Sequence[EnterpriseIn]) -> ImportResult:
    """Register or update enterprises (upsert by code). A station or supply point must name a gas
    company that exists or comes earlier in the same batch; a refused item changes nothing."""
    known = await gas_companies(session, {item.company_code for item in items if item.company_code})
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if item.company_code is not None and item.company_code not in known:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="gas.unknown_company",
                    detail=f"no gas company {item.company_code} (register it first, or earlier in this batch)",
                )
            )
            continue
        if item.kind == EnterpriseKind.FILLING_STATION and item.location is None:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="gas.station_location_required",
                    detail="a filling station's location is needed to send enforcement to it",
                )
            )
            continue
        if item.kind == EnterpriseKind.GAS_COMPANY:
            known.add(item.code)
        rows[item.code] = _enterprise_row(item)
    created = 0
    if rows:
        values = insert(Enterprise).values(list(rows.values()))
        upsert = values.on_conflict_do_update(
            index_elements=[Enterprise.code],
            set_={
                **{name: values.excluded[name] for name in ENTERPRISE_COLUMNS},
                "version": Enterprise.version + 1,
                "updated_at": func.now(),
            },
        ).returning(Enterprise.version)
        versions = (await session.scalars(upsert)).all()
        created = sum(1 for version in versions if version == 1)
    return ImportResult(received=len(items), created=created, updated=len(rows) - created, refused=refused)


async def get_enterprise(
    session: AsyncSession, code: str, principal: Principal | None = None
) -> EnterpriseView:
    enterprise = await session.scalar(ONE_ENTERPRISE, {"code": code})
    if enterprise is None:
        raise UnknownEnterprise(f"no enterprise {code}")
    if principal is not None:
        require_district(principal, enterprise.district_code)
    today = rules_today(await transaction_time(session))
    entrusted = list((await session.scalars(ENTRUSTED_BY, {"code": code, "today": today})).all())
    return EnterpriseView(enterprise, entrusted)


async def list_enterprises(
    session: AsyncSession,
    *,
    district: str | None,
    kind: EnterpriseKind | None,
    company: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Enterprise], str | None]:
    query: Select[Enterprise] = select(Enterprise).order_by(Enterprise.code).limit(limit + 1)
    if district is not None:
        query = query.where(Enterprise.district_code == district)
    if kind is not None:
        query = query.where(Enterprise.kind == kind.value)
    if company is not None:
        query = query.where(Enterprise.company_code == company)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(Enterprise.code > cursor_value(str, after))
    found = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(found[limit - 1].code) if len(found) > limit else None
    return found[:limit], next_cursor


async def station(session: AsyncSession, code: str, *, for_update: bool = False) -> Enterprise:
    query = select(Enterprise).where(Enterprise.code == code)
    if for_update:
        query = query.with_for_update()
    found = await session.scalar(query)
    if found is None:
        raise UnknownEnterprise(f"no filling station {code}")
    if found.kind != EnterpriseKind.FILLING_STATION.value:
        raise NotAStation(f"{code} is a {found.kind}, not a filling station")
    return found


async def entrust(
    session: AsyncSession, station_code: str, company_code: str, valid_until: date | None
) -> None:
    """Let ``company_code``'s cylinders be filled at ``station_code`` (until ``valid_until``)."""
    await station(session, station_code)
    company = await session.get(Enterprise, company_code)
    if company is None:
        raise UnknownEnterprise(f"no enterprise {company_code}")
    if company.kind != EnterpriseKind.GAS_COMPANY.value:
        raise NotACompany(f"{company_code} is a {company.kind}; only a gas company entrusts its cylinders")
    statement = insert(Entrustment).values(
        company_code=company_code, station_code=station_code, valid_until=valid_until
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Entrustment.company_code, Entrustment.station_code],
            set_={"valid_until": statement.excluded.valid_until},
        )
    )


async def set_lock(
    uow: UnitOfWork, station_code: str, *, locked: bool, reason: str, actor: Principal
) -> Enterprise:
    """Lock (or unlock) a station's scales: its fill checks refuse until it is unlocked. Audited."""
    session = uow.session
    found = await station(session, station_code, for_update=True)
    require_district(actor, found.district_code)
    if locked and found.locked_at is not None:
        raise AlreadyLocked(f"station {station_code} is locked already")
    if not locked and found.locked_at is None:
        raise NotLocked(f"station {station_code} is not locked")
    now = await uow.now()
    found.locked_at = now if locked else None
    found.locked_by = actor.subject if locked else None
    found.lock_reason = reason if locked else None
    found.version += 1
    found.updated_at = now
    session.add(
        StationLock(station_code=station_code, locked=locked, reason=reason, actor=actor.subject, at=now)
    )
    await session.flush()
    return found


async def lock_history(session: AsyncSession, station_code: str, limit: int) -> list[StationLock]:
    await station(session, station_code)
    query = (
        select(StationLock)
        .where(StationLock.station_code == station_code)
        .order_by(StationLock.at.desc(), StationLock.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


# -- users ---------------------------------------------------------------------------------------------


async def create_user(session: AsyncSession, item: GasUserIn, principal: Principal) -> GasUser:
    require_district(principal, item.district_code)
    if item.supplier_code is not None and await session.get(Enterprise, item.supplier_code) is None:
        raise UnknownEnterprise(f"no enterprise {item.supplier_code}")
    user = GasUser(
        kind=item.kind.value,
        name=item.name,
        phone=item.phone,
        address=item.address,
        district_code=item.district_code,
        lon=item.location.lon if item.location else None,
        lat=item.location.lat if item.location else None,
        supplier_code=item.supplier_code,
        stove_sold_on=item.stove_sold_on,
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID, principal: Principal) -> GasUser:
    user = await session.get(GasUser, user_id)
    if user is None:
        raise UnknownUser(f"no gas user {user_id}")
    require_district(principal, user.district_code)
    return user


# -- cylinders -----------------------------------------------------------------------------------------


def rules_today(moment: datetime) -> date:
    """The city's calendar day of a moment: the day the fill rules and the daily violation count by."""
    from citygrid.clock import CITY_TIMEZONE

    return moment.astimezone(CITY_TIMEZONE).date()


def cylinder_row(item: CylinderIn) -> dict[str, Any]:
    passed_on = item.last_inspected_on if item.last_inspection_passed else None
    return {
        "code": item.code,
        "owner_code": item.owner_code,
        "manufacturer": item.manufacturer,
        "serial": item.serial,
        "manufactured_on": item.manufactured_on,
        "last_inspected_on": item.last_inspected_on,
        "last_passed_inspection_on": passed_on,
        "next_inspection_due": rules.inspection_due(item.manufactured_on, passed_on),
        "end_of_life": rules.end_of_life(item.manufactured_on, passed_on),
        "tare_kg": item.tare_kg,
        "capacity_kg": item.capacity_kg,
    }


async def import_cylinders(session: AsyncSession, items: Sequence[CylinderIn]) -> ImportResult:
    """Register cylinders. A code registered before (even scrapped: codes are never reused) or twice
    in the batch is refused, as is an owner that is not a gas company; the rest are registered."""
    companies = await gas_companies(session, {item.owner_code for item in items})
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        if item.owner_code not in companies:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="gas.unknown_company",
                    detail=f"no gas company {item.owner_code}",
                )
            )
        elif item.code in rows:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="gas.duplicate_code",
                    detail="this code comes twice in the batch",
                )
            )
        else:
            rows[item.code] = cylinder_row(item)
    created: set[str] = set()
    if rows:
        statement = (
            insert(Cylinder).values(list(rows.values())).on_conflict_do_nothing().returning(Cylinder.code)
        )
        created = set((await session.scalars(statement)).all())
    for index, item in enumerate(items):
        if item.code in rows and item.code not in created:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="gas.code_taken",
                    detail="this code is registered already; a cylinder's code is never reused",
                )
            )
    refused.sort(key=lambda refusal: refusal.index)
    return ImportResult(received=len(items), created=len(created), updated=0, refused=refused)


ONE_CYLINDER = (
    select(Cylinder, Enterprise.district_code)
    .join(Enterprise, Enterprise.code == Cylinder.owner_code)
    .where(Cylinder.code == bindparam("code"))
)


async def get_cylinder(session: AsyncSession, code: str, principal: Principal) -> Cylinder:
    """The cylinder, for a caller who may see it: a district-bound caller sees its district's
    companies' cylinders."""
    row = (await session.execute(ONE_CYLINDER, {"code": code})).one_or_none()
    if row is None:
        raise UnknownCylinder(f"no cylinder {code}")
    cylinder, district = row
    require_district(principal, district)
    return cylinder


async def cylinders_held(session: AsyncSession, user: GasUser, limit: int) -> list[Cylinder]:
    query = select(Cylinder).where(Cylinder.holder_id == user.id).order_by(Cylinder.code).limit(limit)
    return list((await session.scalars(query)).all())


async def inspections_due(
    session: AsyncSession, owner_code: str, *, until: date, limit: int, cursor: str | None
) -> tuple[list[Cylinder], str | None]:
    """An owner's cylinders due for inspection by ``until`` (live ones), soonest first."""
    query = (
        select(Cylinder)
        .where(
            Cylinder.owner_code == owner_code,
            Cylinder.next_inspection_due <= until,
            Cylinder.status.not_in(("scrapped", "void")),
        )
        .order_by(Cylinder.next_inspection_due, Cylinder.code)
        .limit(limit + 1)
    )
    if cursor:
        due, code = decode_cursor(cursor, 2)
        # A row comparison: the index's own order, so a deep page starts where the last one ended.
        after = tuple_(literal(cursor_value(date.fromisoformat, due)), literal(cursor_value(str, code)))
        query = query.where(tuple_(Cylinder.next_inspection_due, Cylinder.code) > after)
    found = list((await session.scalars(query)).all())
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.next_inspection_due.isoformat(), last.code)
    return found[:limit], next_cursor


async def touch(session: AsyncSession, codes: Sequence[str]) -> None:
    """Bump the version of cylinders changed in place (their ETag changes)."""
    if codes:
        await session.execute(
            update(Cylinder)
            .where(Cylinder.code.in_(codes))
            .values(version=Cylinder.version + 1, updated_at=func.now())
        )
