"""The register's service functions: imports by key (created or updated, each refusal with its
reason), lists by keyset, one record by key."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.errors import NotFound
from citygrid.fleet.terminals import full_phone
from citygrid.imports import import_result, terminal_change_voids_code, upsert_by_key
from citygrid.pagination import cursor_value, decode_cursor, encode_cursor
from citygrid.schemas import ImportResult, Refusal
from services.muck.domain.geofences import Corridor, CorridorIndex, SiteIndex
from services.muck.domain.geofences import Site as SiteShape
from services.muck.models import Base, Company, Driver, Route, Site, TransportArea, Truck
from services.muck.registry.schemas import (
    AreaIn,
    CompanyIn,
    DriverIn,
    RouteIn,
    SiteIn,
    TruckIn,
)

Row = TypeVar("Row", bound=Base)
TRUCK_IMPORT_LOCK = 7_744_002


class UnknownRecord(NotFound):
    code = "muck.not_found"


class UnknownCompany(NotFound):
    code = "muck.unknown_company"


async def import_companies(session: AsyncSession, items: Sequence[CompanyIn]) -> ImportResult:
    rows = {item.code: item.model_dump() for item in items}
    created = await upsert_by_key(session, Company, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, [])


async def import_trucks(session: AsyncSession, items: Sequence[TruckIn]) -> ImportResult:
    """A truck must name a registered company; one terminal is one truck's. Imports of trucks take
    turns (a lock of the transaction): two at once could otherwise give one number to two trucks,
    each having checked it free."""
    await session.execute(select(func.pg_advisory_xact_lock(TRUCK_IMPORT_LOCK)))
    companies = set(
        (
            await session.scalars(
                select(Company.code).where(Company.code.in_({i.company_code for i in items}))
            )
        ).all()
    )
    phones = {full_phone(item.terminal_phone): item.plate for item in items}
    taken: dict[str, str] = {
        phone: plate
        for phone, plate in await session.execute(
            select(Truck.terminal_phone, Truck.plate).where(Truck.terminal_phone.in_(phones))
        )
    }
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    seen_phones: dict[str, str] = {}
    for index, item in enumerate(items):
        phone = full_phone(item.terminal_phone)
        holder = taken.get(phone) or seen_phones.get(phone)
        if item.company_code not in companies:
            refused.append(
                Refusal(
                    index=index,
                    key=item.plate,
                    code="muck.unknown_company",
                    detail=f"no transport company {item.company_code}",
                )
            )
        elif holder is not None and holder != item.plate:
            refused.append(
                Refusal(
                    index=index,
                    key=item.plate,
                    code="muck.terminal_taken",
                    detail=f"terminal {item.terminal_phone} is truck {holder}'s",
                )
            )
        else:
            seen_phones[phone] = item.plate
            rows[item.plate] = {**item.model_dump(), "terminal_phone": phone}
    # Another terminal for a truck: the old one's code is void, and the new one registers.
    created = await upsert_by_key(
        session, Truck, "plate", list(rows.values()), also_set=terminal_change_voids_code(Truck)
    )
    return import_result(len(items), len(rows), created, refused)


async def import_sites(session: AsyncSession, items: Sequence[SiteIn]) -> ImportResult:
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        try:
            SiteIndex([SiteShape(item.code, item.kind.value, item.boundary)])
        except ValueError as error:
            refused.append(
                Refusal(index=index, key=item.code, code="muck.invalid_boundary", detail=str(error))
            )
            continue
        row = item.model_dump(mode="json")
        row["permit_valid_from"], row["permit_valid_until"] = item.permit_valid_from, item.permit_valid_until
        rows[item.code] = row
    created = await upsert_by_key(session, Site, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, refused)


async def import_routes(session: AsyncSession, items: Sequence[RouteIn]) -> ImportResult:
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        try:
            CorridorIndex([Corridor(item.code, item.line, item.width_m)])
        except ValueError as error:
            refused.append(Refusal(index=index, key=item.code, code="muck.invalid_route", detail=str(error)))
            continue
        rows[item.code] = item.model_dump(mode="json")
    created = await upsert_by_key(session, Route, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, refused)


async def import_areas(session: AsyncSession, items: Sequence[AreaIn]) -> ImportResult:
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        try:
            SiteIndex([SiteShape(item.code, "construction", item.boundary)])
        except ValueError as error:
            refused.append(
                Refusal(index=index, key=item.code, code="muck.invalid_boundary", detail=str(error))
            )
            continue
        rows[item.code] = item.model_dump(mode="json")
    created = await upsert_by_key(session, TransportArea, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, refused)


async def release_terminal(session: AsyncSession, plate: str) -> Truck:
    """Forget the auth code of the truck's terminal: it may register again (a replaced or reset unit)."""
    truck = await session.get(Truck, plate, with_for_update=True)
    if truck is None:
        raise UnknownRecord(f"no truck {plate}")
    truck.auth_code_sha256 = None
    truck.registered_at = None
    truck.version = truck.version + 1
    truck.updated_at = func.now()
    return truck


async def add_driver(session: AsyncSession, item: DriverIn) -> Driver:
    if await session.get(Company, item.company_code) is None:
        raise UnknownCompany(f"no transport company {item.company_code}")
    values = item.model_dump()
    values["id_number"] = values["id_number"].upper()
    statement = (
        insert(Driver)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_update(
            index_elements=[Driver.id_number],
            set_={name: values[name] for name in ("company_code", "name", "phone", "licence_number")}
            | {"updated_at": func.now()},
        )
        .returning(Driver)
    )
    driver: Driver = (await session.scalars(statement)).one()
    return driver


async def one(session: AsyncSession, model: type[Row], key: str) -> Row:
    found = await session.get(model, key)
    if found is None:
        raise UnknownRecord(f"no {model.__tablename__[:-1]} {key}")
    return found


async def drivers_page(
    session: AsyncSession, company: str | None, *, limit: int, cursor: str | None
) -> tuple[list[Driver], str | None]:
    query = select(Driver).order_by(Driver.id).limit(limit + 1)
    if company is not None:
        query = query.where(Driver.company_code == company)
    if cursor:
        (after,) = decode_cursor(cursor, 1)
        query = query.where(Driver.id > cursor_value(uuid.UUID, after))
    found = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(str(found[limit - 1].id)) if len(found) > limit else None
    return found[:limit], next_cursor
