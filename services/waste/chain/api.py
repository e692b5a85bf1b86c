"""The collection chain over HTTP: records in (batches, item by item), trips, chain violations and
figures out. Thin: each route is a call into ``chain.service`` or ``chain.figures``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from sqlalchemy import func, select

from citygrid.auth import CurrentPrincipal, district_scope, require_district
from citygrid.clock import EARLIEST, LATEST
from citygrid.pagination import (
    Cursor,
    Limit,
    NewestFirst,
    Page,
    cursor_time,
    cursor_value,
    decode_cursor,
    encode_cursor,
)
from citygrid.runtime import RuntimeDep
from contract.common import Code, KnownDistrict
from contract.waste import WasteStream, WasteViolation
from services.waste import periods
from services.waste.chain import figures, service
from services.waste.chain.models import ChainViolation, TripRow
from services.waste.chain.schemas import (
    ChainViolationOut,
    CoverageOut,
    FacilityIntakeOut,
    MovementBatch,
    MovementOut,
    PickupBatch,
    PickupOut,
    PointRateOut,
    RatesOut,
    RecordsResult,
    TonnageOut,
    TripDetailOut,
    TripOut,
    WeighingBatch,
    WeighingOut,
)
from services.waste.domain.chain_figures import RECYCLING_TARGET, RESOURCE_UTILISATION_TARGET
from services.waste.models import Vehicle
from services.waste.periods import InvalidPeriod, within_records
from services.waste.registry import service as registry
from services.waste.registry.api import PlatePath
from services.waste.registry.schemas import Plate

router = APIRouter(prefix="/v1", tags=["waste collection chain"])
TRIPS_PAGE = NewestFirst(TripRow.started_at, TripRow.id)
VIOLATIONS_PAGE = NewestFirst(ChainViolation.at, ChainViolation.id)
LONGEST_PERIOD = timedelta(days=366)
LONGEST_RATES_PERIOD = timedelta(days=92)
PlateQuery = Annotated[Plate | None, Query()]
CodeQuery = Annotated[Code | None, Query()]


def period(since: datetime, until: datetime, longest: timedelta = LONGEST_PERIOD) -> None:
    periods.period(since, until, longest)


def intake_router(counted: Callable[[service.Tally], None]) -> APIRouter:
    """The records' intake (``waste:ingest``); ``counted`` adds a batch's counts to the metrics."""
    intake = APIRouter(prefix="/v1", tags=["waste collection chain"])

    @intake.post("/pickups", operation_id="report_pickups")
    async def report_pickups(
        body: PickupBatch, runtime: RuntimeDep, principal: CurrentPrincipal
    ) -> RecordsResult:
        """Up to 1,000 bin lifts reported by vehicles' platforms (vehicle, point, bin tag, on-truck
        weight, time), each answered on its own: stored, a duplicate of one stored before (the same
        vehicle, tag and time), or refused with a problem code."""
        tally = service.Tally()
        async with runtime.uow() as uow:
            result = await service.ingest_pickups(uow, body.pickups, principal, tally)
        counted(tally)
        return result

    @intake.post("/weighings", operation_id="report_weighings")
    async def report_weighings(
        body: WeighingBatch, runtime: RuntimeDep, principal: CurrentPrincipal
    ) -> RecordsResult:
        """Up to 1,000 weighbridge records of facilities (facility, weighbridge, vehicle, gross, tare,
        time; the net is gross − tare), each answered on its own; the same vehicle, facility and time
        is a duplicate."""
        tally = service.Tally()
        async with runtime.uow() as uow:
            result = await service.ingest_weighings(uow, body.weighings, principal, tally)
        counted(tally)
        return result

    @intake.post("/movements", operation_id="report_movements")
    async def report_movements(
        body: MovementBatch, runtime: RuntimeDep, principal: CurrentPrincipal
    ) -> RecordsResult:
        """Up to 1,000 movements of vehicles reported by their platforms: left or back at the depot,
        arrived at a facility, stopped outside every registered place (sent again with its end once
        it ended: ``updated``)."""
        tally = service.Tally()
        async with runtime.uow() as uow:
            result = await service.ingest_movements(uow, body.movements, principal, tally)
        counted(tally)
        return result

    return intake


# -- trips ----------------------------------------------------------------------------------------


@router.get("/trips", operation_id="list_trips")
async def list_trips(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    plate: PlateQuery = None,
    facility: CodeQuery = None,
    day: date | None = None,
    open: bool | None = None,
    district: KnownDistrict | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TripOut]:
    """Trips newest first: of a vehicle, unloaded at a facility, started on a city date, open or
    closed; in your district if you are bound to one."""
    where: list[Any] = []
    if (scoped := district_scope(principal, district)) is not None:
        where.append(TripRow.district_code == scoped)
    if plate is not None:
        where.append(TripRow.plate == plate)
    if facility is not None:
        where.append(TripRow.facility_code == facility)
    if day is not None:
        if not EARLIEST.date() <= day < LATEST.date():
            raise InvalidPeriod("a day between 1970 and 2200")
        since, until = figures.day_span(day)
        where += [TripRow.started_at >= since, TripRow.started_at < until]
    if open is not None:
        where.append(TripRow.ending == "open" if open else TripRow.ending != "open")
    query = TRIPS_PAGE.page_query(select(TripRow).where(*where), limit, cursor)
    async with runtime.reads() as session:
        found = list((await session.scalars(query)).all())
    shown, next_cursor = TRIPS_PAGE.page(found, limit)
    return Page[TripOut](items=[TripOut.model_validate(t) for t in shown], next_cursor=next_cursor)


@router.get("/trips/{trip_id}", operation_id="get_trip")
async def get_trip(trip_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal) -> TripDetailOut:
    """A trip with its pickups, its weighbridge record and its violations."""
    async with runtime.db() as session:
        found = await service.trip(session, trip_id)
        require_district(principal, found.district_code)
        pickups, weighing, violations = await service.trip_records(session, found)
    shown = TripDetailOut.model_validate(found)
    shown.pickup_records = [PickupOut.model_validate(p) for p in pickups]
    shown.weighing = WeighingOut.model_validate(weighing) if weighing is not None else None
    shown.violations = [ChainViolationOut.model_validate(v) for v in violations]
    return shown


# -- movements ------------------------------------------------------------------------------------

LONGEST_MOVEMENTS_PERIOD = timedelta(days=31)


@router.get("/vehicles/{plate}/movements", operation_id="list_vehicle_movements")
async def list_vehicle_movements(
    plate: PlatePath,
    since: AwareDatetime,
    until: AwareDatetime,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[MovementOut]:
    """A vehicle's movements in a period of up to 31 days, oldest first: those its platform
    reported and those read from its positions (left or back at a depot, arrived at a facility,
    stopped outside every registered place)."""
    period(since, until, LONGEST_MOVEMENTS_PERIOD)
    after: tuple[datetime, str, str] | None = None
    if cursor:
        at, kind, place = decode_cursor(cursor, 3)
        after = (cursor_time(at), cursor_value(str, kind), cursor_value(str, place))
    async with runtime.reads() as session:
        vehicle = await registry.one(session, Vehicle, plate)
        require_district(principal, vehicle.district_code)
        found = await service.vehicle_movements(session, plate, since, until, limit, after)
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.at.isoformat(), last.kind, last.place)
    return Page[MovementOut](
        items=[MovementOut.model_validate(m) for m in found[:limit]], next_cursor=next_cursor
    )


# -- chain violations -----------------------------------------------------------------------------


@router.get("/chain-violations", operation_id="list_chain_violations")
async def list_chain_violations(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    kind: WasteViolation | None = None,
    plate: PlateQuery = None,
    point: CodeQuery = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    district: KnownDistrict | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ChainViolationOut]:
    """Violations of the collection chain (mixed loads, weight mismatches, trips not unloaded,
    unloadings at unregistered places, missed collections), newest first."""
    where: list[Any] = []
    if (scoped := district_scope(principal, district)) is not None:
        where.append(ChainViolation.district_code == scoped)
    if kind is not None:
        where.append(ChainViolation.kind == kind.value)
    if plate is not None:
        where.append(ChainViolation.plate == plate)
    if point is not None:
        where.append(ChainViolation.point_code == point)
    within_records(since=since, until=until)
    if since is not None:
        where.append(ChainViolation.at >= since)
    if until is not None:
        where.append(ChainViolation.at < until)
    query = VIOLATIONS_PAGE.page_query(select(ChainViolation).where(*where), limit, cursor)
    async with runtime.reads() as session:
        found = list((await session.scalars(query)).all())
    shown, next_cursor = VIOLATIONS_PAGE.page(found, limit)
    return Page[ChainViolationOut](
        items=[ChainViolationOut.model_validate(v) for v in shown], next_cursor=next_cursor
    )


@router.get("/chain-violations/{violation_id}", operation_id="get_chain_violation")
async def get_chain_violation(
    violation_id: uuid.UUID, runtime: RuntimeDep, principal: CurrentPrincipal
) -> ChainViolationOut:
    async with runtime.reads() as session:
        found = await session.get(ChainViolation, violation_id)
    if found is None:
        raise service.UnknownChainViolation(f"no violation {violation_id}")
    require_district(principal, found.district_code)
    return ChainViolationOut.model_validate(found)


# -- figures --------------------------------------------------------------------------------------


@router.get("/figures/tonnage", operation_id="tonnage")
async def tonnage(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: AwareDatetime,
    until: AwareDatetime,
    by: figures.Tonnage = "stream",
    district: KnownDistrict | None = None,
) -> list[TonnageOut]:
    """Tonnes weighed (net, at the weighbridges) in ``[since, until)``, at most 366 days, per stream
    of the unloading vehicle, per district (the vehicle's) or per city date."""
    period(since, until)
    async with runtime.analytics() as session:
        rows = await figures.tonnage(session, by, since, until, district_scope(principal, district))
    return [TonnageOut(key=key, tonnes=tonnes, weighings=count) for key, tonnes, count in rows]


@router.get("/figures/rates", operation_id="chain_rates")
async def rates(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: AwareDatetime,
    until: AwareDatetime,
    district: KnownDistrict | None = None,
) -> RatesOut:
    """The recycling rate (recyclable ÷ all tonnage) and the resource-utilisation rate ((recyclable
    + food waste treated) ÷ all) of ``[since, until)``, beside the national targets (35 %, 60 %)."""
    period(since, until)
    async with runtime.analytics() as session:
        found = await figures.rates(session, since, until, district_scope(principal, district))
    return RatesOut(
        since=since,
        until=until,
        total_t=found.total_t,
        recyclable_t=found.recyclable_t,
        food_treated_t=found.food_treated_t,
        recycling_rate=found.recycling_rate,
        recycling_target=RECYCLING_TARGET,
        meets_recycling_target=found.meets_recycling_target,
        resource_utilisation_rate=found.resource_utilisation_rate,
        resource_utilisation_target=RESOURCE_UTILISATION_TARGET,
        meets_resource_utilisation_target=found.meets_resource_utilisation_target,
    )


@router.get("/figures/coverage", operation_id="collection_coverage")
async def coverage(
    runtime: RuntimeDep, principal: CurrentPrincipal, day: date, district: KnownDistrict | None = None
) -> CoverageOut:
    """How many of the point-visits due in the collection windows opening on the city date ``day``
    were done within them; on a day under way, of the windows closed so far."""
    if not EARLIEST.date() <= day < LATEST.date():
        raise InvalidPeriod("a day between 1970 and 2200")
    async with runtime.analytics() as session:
        now = (await session.execute(select(func.now()))).scalar_one()
        found = await figures.coverage(session, day, now, district_scope(principal, district))
    _, day_ends = figures.day_span(day)
    return CoverageOut(
        day=found.day,
        scheduled=found.scheduled,
        done=found.done,
        rate=found.rate,
        complete=now >= day_ends + timedelta(days=1),
    )


@router.get("/figures/point-rates", operation_id="point_violation_rates")
async def point_rates(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: AwareDatetime,
    until: AwareDatetime,
    district: KnownDistrict | None = None,
    limit: Limit = 50,
) -> list[PointRateOut]:
    """Each point's chain violations over its occasions in ``[since, until)`` (at most 92 days):
    every trip that served it and every visit missed is an occasion. Highest rate first."""
    period(since, until, LONGEST_RATES_PERIOD)
    async with runtime.analytics() as session:
        rows = await figures.point_rates(session, since, until, district_scope(principal, district), limit)
    return [
        PointRateOut(
            point_code=code,
            violations=hits,
            occasions=occasions,
            rate=hits / occasions if occasions else None,
        )
        for code, hits, occasions in rows
    ]


@router.get("/figures/facility-intake", operation_id="facility_intake")
async def facility_intake(
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    since: AwareDatetime,
    until: AwareDatetime,
    district: KnownDistrict | None = None,
) -> list[FacilityIntakeOut]:
    """Tonnes each facility took in ``[since, until)`` (at most 366 days), per stream."""
    period(since, until)
    async with runtime.analytics() as session:
        rows = await figures.facility_intake(session, since, until, district_scope(principal, district))
    return [
        FacilityIntakeOut(facility_code=code, stream=WasteStream(stream), tonnes=tonnes, weighings=count)
        for code, stream, tonnes, count in rows
    ]
