"""The register's service functions: imports by key (created or updated, each refusal with its
reason), lists by keyset, one record by key. The caller's unit of work commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Table, case, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.errors import NotFound
from citygrid.fleet.terminals import full_phone
from citygrid.imports import import_result, terminal_change_voids_code, upsert_by_key
from citygrid.schemas import ImportResult, Refusal
from services.waste.models import (
    Base,
    Bin,
    CollectionPoint,
    Depot,
    DropOffPoint,
    Facility,
    Route,
    Vehicle,
    VehicleKind,
)
from services.waste.registry.schemas import (
    CollectionPointIn,
    DepotIn,
    FacilityIn,
    PointIn,
    RouteIn,
    VehicleIn,
)

Row = TypeVar("Row", bound=Base)
# Imports of one kind take turns (a transaction lock): two at once could each find a terminal or a
# tag free and give it to two records.
VEHICLE_IMPORT_LOCK = 7_745_001
POINT_IMPORT_LOCK = 7_745_002
# What a route's collection windows depend on.
ROUTE_SCHEDULE_FIELDS = ("plate", "stream", "days", "time_window", "stops")


class UnknownRecord(NotFound):
    code = "waste.not_found"


def _located(values: dict[str, Any]) -> dict[str, Any]:
    """A request's GeoJSON ``location`` as the table's ``lon``/``lat``."""
    lon, lat = values.pop("location")["coordinates"]
    return {**values, "lon": lon, "lat": lat}


async def import_points(session: AsyncSession, items: Sequence[PointIn]) -> ImportResult:
    """Points with their bins: a point's bins are replaced by the ones given. A bin's RFID tag is
    one bin's: a tag registered at another point is refused."""
    await session.execute(select(func.pg_advisory_xact_lock(POINT_IMPORT_LOCK)))
    tags = {bin_.rfid for item in items for bin_ in item.bins}
    holders: dict[str, str] = {
        rfid: point
        for rfid, point in await session.execute(select(Bin.rfid, Bin.point_code).where(Bin.rfid.in_(tags)))
    }
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    bins: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        taken = [b.rfid for b in item.bins if holders.get(b.rfid, item.code) != item.code]
        taken += [b.rfid for b in item.bins if b.rfid in bins and bins[b.rfid]["point_code"] != item.code]
        if taken:
            refused.append(
                Refusal(
                    index=index,
                    key=item.code,
                    code="waste.rfid_taken",
                    detail=f"bin tag {taken[0]} is registered at another point",
                )
            )
            continue
        row = _located(item.model_dump(mode="json", exclude={"bins"}))
        rows[item.code] = row
        for bin_ in item.bins:
            bins[bin_.rfid] = {**bin_.model_dump(mode="json"), "point_code": item.code}
    created = await upsert_by_key(session, DropOffPoint, "code", list(rows.values()))
    if rows:
        await session.execute(delete(Bin).where(Bin.point_code.in_(rows)))
    if bins:
        await session.execute(insert(Bin).values(list(bins.values())))
    return import_result(len(items), len(rows), created, refused)


async def import_collection_points(session: AsyncSession, items: Sequence[CollectionPointIn]) -> ImportResult:
    rows = {item.code: _located(item.model_dump(mode="json")) for item in items}
    created = await upsert_by_key(session, CollectionPoint, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, [])


async def import_vehicles(session: AsyncSession, items: Sequence[VehicleIn]) -> ImportResult:
    """One terminal is one vehicle's."""
    await session.execute(select(func.pg_advisory_xact_lock(VEHICLE_IMPORT_LOCK)))
    phones = {full_phone(item.terminal_phone) for item in items}
    taken: dict[str, str] = {
        phone: plate
        for phone, plate in await session.execute(
            select(Vehicle.terminal_phone, Vehicle.plate).where(Vehicle.terminal_phone.in_(phones))
        )
    }
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        phone = full_phone(item.terminal_phone)
        holder = taken.get(phone)
        if holder is not None and holder != item.plate:
            refused.append(
                Refusal(
                    index=index,
                    key=item.plate,
                    code="waste.terminal_taken",
                    detail=f"terminal {item.terminal_phone} is vehicle {holder}'s",
                )
            )
            continue
        taken[phone] = item.plate
        rows[item.plate] = {**item.model_dump(mode="json"), "terminal_phone": phone}
    # Another terminal for a vehicle: the old one's code is void, and the new one registers.
    created = await upsert_by_key(
        session, Vehicle, "plate", list(rows.values()), also_set=terminal_change_voids_code(Vehicle)
    )
    return import_result(len(items), len(rows), created, refused)


async def import_depots(session: AsyncSession, items: Sequence[DepotIn]) -> ImportResult:
    rows = {item.code: _located(item.model_dump(mode="json")) for item in items}
    created = await upsert_by_key(session, Depot, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, [])


async def import_facilities(session: AsyncSession, items: Sequence[FacilityIn]) -> ImportResult:
    rows = {item.code: _located(item.model_dump(mode="json")) for item in items}
    created = await upsert_by_key(session, Facility, "code", list(rows.values()))
    return import_result(len(items), len(rows), created, [])


async def import_routes(session: AsyncSession, items: Sequence[RouteIn]) -> ImportResult:
    """A route names a registered vehicle, registered stops and facility; sorted waste is not mixed
    again, so a collection vehicle's route carries its stream, to a facility that accepts it."""
    plates = {item.plate for item in items}
    vehicles = {v.plate: v for v in (await session.scalars(select(Vehicle).where(Vehicle.plate.in_(plates))))}
    facilities = {
        f.code: f
        for f in await session.scalars(
            select(Facility).where(Facility.code.in_({i.facility_code for i in items if i.facility_code}))
        )
    }
    wanted = {stop for item in items for stop in item.stops}
    known_stops = set(
        (await session.scalars(select(DropOffPoint.code).where(DropOffPoint.code.in_(wanted)))).all()
    ) | set(
        (await session.scalars(select(CollectionPoint.code).where(CollectionPoint.code.in_(wanted)))).all()
    )
    refused: list[Refusal] = []
    rows: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        vehicle = vehicles.get(item.plate)
        stream = item.stream.value if item.stream is not None else None
        facility = facilities.get(item.facility_code) if item.facility_code else None
        unknown_stops = [stop for stop in item.stops if stop not in known_stops]
        problem: tuple[str, str] | None = None
        if vehicle is None:
            problem = ("waste.unknown_vehicle", f"no vehicle {item.plate}")
        elif unknown_stops:
            problem = ("waste.unknown_stop", f"no drop-off or collection point {unknown_stops[0]}")
        elif item.facility_code and facility is None:
            problem = ("waste.unknown_facility", f"no facility {item.facility_code}")
        elif vehicle.kind == VehicleKind.COLLECTION and stream != vehicle.stream:
            problem = (
                "waste.stream_mismatch",
                f"vehicle {vehicle.plate} carries {vehicle.stream} waste, the route {stream or 'none'}",
            )
        elif facility is not None and stream is not None and stream not in facility.streams:
            problem = (
                "waste.facility_refuses_stream",
                f"facility {facility.code} does not accept {stream} waste",
            )
        if problem is not None:
            refused.append(Refusal(index=index, key=item.code, code=problem[0], detail=problem[1]))
            continue
        rows[item.code] = item.model_dump(mode="json")
    # The collection windows are judged from when the schedule last changed, not any edit (a renamed
    # route keeps its windows under judgement).
    table = cast(Table, Route.__table__)
    excluded = insert(table).excluded
    schedule_changed = or_(
        *(table.c[name].is_distinct_from(excluded[name]) for name in ROUTE_SCHEDULE_FIELDS)
    )
    created = await upsert_by_key(
        session,
        Route,
        "code",
        list(rows.values()),
        also_set={
            "schedule_changed_at": case((schedule_changed, func.now()), else_=table.c.schedule_changed_at)
        },
    )
    return import_result(len(items), len(rows), created, refused)


async def one(session: AsyncSession, model: type[Row], key: str) -> Row:
    found = await session.get(model, key)
    if found is None:
        raise UnknownRecord(f"no {model.__tablename__.replace('_', ' ').rstrip('s')} {key}")
    return found


async def bins_of(session: AsyncSession, points: Sequence[str]) -> dict[str, list[Bin]]:
    found: dict[str, list[Bin]] = {code: [] for code in points}
    if points:
        for bin_ in await session.scalars(
            select(Bin).where(Bin.point_code.in_(points)).order_by(Bin.point_code, Bin.rfid)
        ):
            found[bin_.point_code].append(bin_)
    return found
