"""The position routes: the batch intake of vendors' platforms, the latest of every truck, tracks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import ARRAY, String, any_, bindparam, select

from citygrid.auth import CurrentPrincipal, require_city_wide
from citygrid.clock import EARLIEST, LATEST
from citygrid.errors import InvalidInput, NotFound
from citygrid.fleet.intake import Refused
from citygrid.fleet.relay import relay
from citygrid.fleet.reports import LOAD_CODES, Report
from citygrid.pagination import Cursor, Limit, Page, cursor_value, decode_cursor, encode_cursor
from citygrid.runtime import RuntimeDep
from contract.common import GeoPoint
from contract.muck import Plate
from services.muck.domain.tracks import simplify
from services.muck.models import PositionSource, Truck
from services.muck.positions import service
from services.muck.positions.latest import Latest
from services.muck.positions.schemas import IntakeResult, LatestOut, PositionBatchIn, TrackOut, TrackPoint

router = APIRouter(prefix="/v1", tags=["muck positions"])
LOAD_NAMES = {code: name for name, code in LOAD_CODES.items()}
LONGEST_TRACK = timedelta(days=1)
TRACK_POINTS = 20_000


# Built once, the plates as one array parameter: an IN list would be a bind per plate, compiled
# again for every batch size.
KNOWN_PLATES = select(Truck.plate).where(Truck.plate == any_(bindparam("plates", type_=ARRAY(String))))
KNOWN_PLATES_OF_COMPANY = KNOWN_PLATES.where(Truck.company_code == bindparam("company"))


class UnknownTruck(NotFound):
    code = "muck.unknown_truck"


class InvalidPeriod(InvalidInput):
    code = "muck.invalid_period"


class InvalidBox(InvalidInput):
    code = "muck.invalid_bbox"


def positions_of(request: Request) -> service.Positions:
    positions: service.Positions = request.app.state.positions
    return positions


def latest_out(latest: Latest) -> LatestOut:
    return LatestOut(
        plate=latest.plate,
        at=latest.at,
        location=GeoPoint.of(latest.lon, latest.lat),
        speed_kmh=latest.speed_kmh,
        direction=latest.direction,
        load=LOAD_NAMES.get(latest.load) if latest.load is not None else None,  # type: ignore[arg-type]
        received_at=latest.received_at,
    )


@router.post("/positions", operation_id="report_positions")
async def report_positions(
    body: PositionBatchIn, request: Request, runtime: RuntimeDep, principal: CurrentPrincipal
) -> IntakeResult:
    """Up to 1,000 positions relayed by a terminal vendor's platform; answered once stored. A position
    of a truck not in the register, without a fix, out of range or out of time is refused alone. A
    platform's key bound to a transport company (its ``unit``) relays that company's trucks only."""
    require_city_wide(principal, "the fleet's positions")
    plates = list({item.plate for item in body.positions})
    async with runtime.reads() as session:
        if principal.unit is None:
            found = await session.scalars(KNOWN_PLATES, {"plates": plates})
        else:
            found = await session.scalars(
                KNOWN_PLATES_OF_COMPANY, {"plates": plates, "company": principal.unit}
            )
        known = set(found.all())
    positions = positions_of(request)

    async def store(reports: Sequence[Report]) -> list[Refused]:
        return await positions.store(reports, source=PositionSource.HTTP, blind_area=body.blind_area)

    return await relay(
        body.positions,
        known,
        store,
        unknown_code="muck.unknown_truck",
        unknown="no truck {plate} in the register",
    )


@router.get("/positions/latest", operation_id="latest_positions")
async def latest_positions(
    request: Request,
    principal: CurrentPrincipal,
    bbox: Annotated[
        str | None,
        Query(
            pattern=r"^-?\d+(\.\d+)?,-?\d+(\.\d+)?,-?\d+(\.\d+)?,-?\d+(\.\d+)?$",
            description="min lon, min lat, max lon, max lat: only trucks inside.",
        ),
    ] = None,
    limit: Limit = 500,
    cursor: Cursor = None,
) -> Page[LatestOut]:
    """Every truck's latest position, by plate, from this replica's memory (no database read)."""
    require_city_wide(principal, "the fleet's positions")
    box = [float(value) for value in bbox.split(",")] if bbox else None
    if box is not None and not (-180 <= box[0] <= box[2] <= 180 and -90 <= box[1] <= box[3] <= 90):
        raise InvalidBox("bbox is min lon, min lat, max lon, max lat: each min at most its max, in range")
    after = cursor_value(str, decode_cursor(cursor, 1)[0]) if cursor else ""
    chosen = sorted(
        (
            latest
            for latest in positions_of(request).latest
            if latest.plate > after
            and (box is None or (box[0] <= latest.lon <= box[2] and box[1] <= latest.lat <= box[3]))
        ),
        key=lambda latest: latest.plate,
    )
    page = chosen[:limit]
    next_cursor = encode_cursor(page[-1].plate) if len(chosen) > limit else None
    return Page[LatestOut](items=[latest_out(latest) for latest in page], next_cursor=next_cursor)


@router.get("/trucks/{plate}/position", operation_id="truck_position")
async def truck_position(
    plate: Annotated[Plate, Path()], request: Request, principal: CurrentPrincipal
) -> LatestOut:
    require_city_wide(principal, "the fleet's positions")
    latest = positions_of(request).latest.get(plate)
    if latest is None:
        raise UnknownTruck(f"no position of truck {plate} in the last day")
    return latest_out(latest)


@router.get("/trucks/{plate}/track", operation_id="truck_track")
async def truck_track(
    plate: Annotated[Plate, Path()],
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: datetime,
    until: datetime,
    simplify_m: Annotated[
        float | None, Query(gt=0, le=1000, description="Simplify for display (metres).")
    ] = None,
) -> TrackOut:
    """The truck's positions over at most a day, in time order, one per time."""
    require_city_wide(principal, "the fleet's positions")
    if since.tzinfo is None or until.tzinfo is None:
        raise InvalidPeriod("since and until need a time zone offset")
    if not EARLIEST <= since < until < LATEST or until - since > LONGEST_TRACK:
        raise InvalidPeriod("since must be before until, at most a day apart")
    async with runtime.reads() as session:
        rows = await service.track(session, plate, since, until, TRACK_POINTS + 1)
    truncated = len(rows) > TRACK_POINTS
    rows = rows[:TRACK_POINTS]
    simplified_from = None
    if simplify_m is not None and len(rows) > 2:
        kept = simplify([(row.at, row.lon, row.lat) for row in rows], simplify_m)
        simplified_from = len(rows)
        rows = [rows[index] for index in kept]
    return TrackOut(
        plate=plate,
        since=since,
        until=until,
        simplified_from=simplified_from,
        truncated=truncated,
        points=[
            TrackPoint(
                at=row.at,
                location=GeoPoint.of(row.lon, row.lat),
                speed_kmh=row.speed_kmh,
                direction=row.direction,
                load=LOAD_NAMES.get(row.load) if row.load is not None else None,  # type: ignore[arg-type]
            )
            for row in rows
        ],
    )
