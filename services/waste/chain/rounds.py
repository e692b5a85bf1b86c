"""The chain round: trips assembled from the stored records and checked, and scheduled visits checked
for missed collections, once however many replicas run.

One replica works at a time, the one holding the lease in ``chain_cursor``. A round, in one
transaction:

1. locks the cursor row (``SKIP LOCKED``: a round already running elsewhere means this one has
   nothing to do) and goes on only if this replica holds the lease or it has lapsed;
2. takes the vehicles the intake noted (``chain_dirty_vehicles``, written in the intake's own
   transaction, so none is missed) and those whose trips are due a look again (``recheck_at``: an
   open trip growing too long, a stop under way), assembles each one's trips again from its last
   boundary (a weighing or a return to the depot) before its earliest new record, replaces its
   stored trips from there, and runs the trip checks;
3. checks the collection windows that closed since the last round (less a grace for late pickups);
4. records each violation once by its dedup key (a unique index: a second replica, or a second
   round over the same records, records nothing) with its ``waste.violation.detected`` in the
   outbox, and moves the lease on.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.db import UnitOfWork
from citygrid.ids import new_id, replica_name
from citygrid.runtime import Runtime
from contract.common import GeoPoint
from contract.waste import ViolationDetected, WasteStream, WasteViolation
from services.waste.chain.models import (
    ChainCursor,
    ChainViolation,
    DirtyVehicle,
    Movement,
    MovementKind,
    Pickup,
    TripRow,
    Weighing,
)
from services.waste.chain.service import stream_of
from services.waste.domain import chain
from services.waste.domain.chain_checks import (
    DEFAULT_CHECKS,
    CheckSettings,
    Violation,
    ViolationKind,
    check_trips,
)
from services.waste.domain.chain_schedule import (
    CollectionWindow,
    Route,
    Schedule,
    missed_collections,
    scheduled_visits,
)
from services.waste.metrics import ChainMetrics
from services.waste.models import CollectionPoint, DropOffPoint, Facility, Vehicle
from services.waste.models import Route as RouteRow

log = logging.getLogger("services.waste.chain")

CURSOR: Final = "chain"
# The case categories a chain violation is raised in.
CHAIN_CATEGORY: Final = "20118"  # 生活垃圾收运不规范, irregular collection or transport of household waste
KITCHEN_DUMPING_CATEGORY: Final = "20116"  # 餐厨垃圾乱倒, illegally dumped kitchen waste
CHECKS: Final = (
    ViolationKind.MIXED_LOAD,
    ViolationKind.WEIGHT_MISMATCH,
    ViolationKind.TRIP_NOT_UNLOADED,
    ViolationKind.UNLOADED_AT_UNREGISTERED_PLACE,
)
RECORDS_PER_VEHICLE: Final = 20_000
TRIPS_PER_STATEMENT: Final = 1_000
MIN_MISSED_STEP: Final = timedelta(minutes=5)


class TooManyRecords(ValueError):
    """More records of a vehicle than a round assembles at once."""


def category_of(kind: ViolationKind, stream: str | None) -> str:
    if kind is ViolationKind.UNLOADED_AT_UNREGISTERED_PLACE and stream == chain.Stream.FOOD:
        return KITCHEN_DUMPING_CATEGORY
    return CHAIN_CATEGORY


@dataclass(frozen=True)
class ChainConfig:
    checks: CheckSettings = DEFAULT_CHECKS
    lease: timedelta = timedelta(seconds=60)
    # How far before its earliest new record a vehicle's trip may have started.
    lookback: timedelta = timedelta(days=2)
    # A window is judged this long after it closes, for pickups sent late (a terminal out of
    # coverage); one sent later still comes after the missed collection was raised.
    missed_grace: timedelta = timedelta(hours=2)
    # The windows the very first round looks back on.
    missed_backfill: timedelta = timedelta(days=1)
    # At most this much of the schedule per round, so a round after a long stop stays short.
    missed_step: timedelta = timedelta(hours=6)
    vehicles_per_round: int = 200
    # The intake's notes taken per round (one per vehicle and batch): a few batches per vehicle.
    notes_per_round: int = 1_000


@dataclass
class RoundResult:
    vehicles: int = 0
    trips: int = 0
    visits: int = 0
    checks: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    leader: bool = False

    @property
    def handled(self) -> int:
        return self.vehicles


@dataclass(frozen=True)
class Place:
    lon: float
    lat: float
    district_code: str | None
    address: str | None = None


class ChainRound:
    """This replica's side of the round: its name in the lease, the routes it last loaded."""

    def __init__(
        self, runtime: Runtime, metrics: ChainMetrics | None = None, config: ChainConfig | None = None
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.config = config or ChainConfig()
        self.owner = replica_name()
        self.routes: list[Route] = []
        self.routes_fingerprint: str | None = None
        self.missed_step = self.config.missed_step
        self.last: RoundResult = RoundResult()

    async def round(self) -> int:
        """One round; the vehicles whose trips it assembled (0 when another replica leads)."""
        async with self.runtime.uow() as uow:
            result = await self._round(uow)
        self.last = result
        if self.metrics is not None:
            self.metrics.round_leader.set(1 if result.leader else 0)
            for check, count in result.checks.items():
                self.metrics.checks.labels(check).inc(count)
            for kind, count in result.violations.items():
                self.metrics.violations.labels(kind).inc(count)
        return result.handled

    async def release(self) -> None:
        """Give the lease back as the replica stops, so another leads at its next round rather than
        when the lease lapses (up to a minute without rounds on every deploy otherwise)."""
        async with self.runtime.uow() as uow:
            await uow.session.execute(
                update(ChainCursor)
                .where(ChainCursor.name == CURSOR, ChainCursor.owner == self.owner)
                .values(lease_until=func.now())
            )

    async def _round(self, uow: UnitOfWork) -> RoundResult:
        session = uow.session
        now = await uow.now()
        result = RoundResult()
        await session.execute(
            insert(ChainCursor)
            .values(name=CURSOR, owner="", lease_until=now, missed_until=now - self.config.missed_backfill)
            .on_conflict_do_nothing()
        )
        cursor = await session.scalar(
            select(ChainCursor).where(ChainCursor.name == CURSOR).with_for_update(skip_locked=True)
        )
        if cursor is None or (cursor.owner != self.owner and cursor.lease_until > now):
            return result
        result.leader = True
        await self._trips(uow, now, result)
        cursor.missed_until = await self._missed_apart(uow, now, cursor.missed_until, result)
        cursor.owner = self.owner
        cursor.lease_until = now + self.config.lease
        cursor.updated_at = now
        return result

    # -- trips ---------------------------------------------------------------------------------

    async def _trips(self, uow: UnitOfWork, now: datetime, result: RoundResult) -> None:
        session = uow.session
        limit = self.config.vehicles_per_round
        notes = (
            await session.execute(
                select(DirtyVehicle.plate)
                .order_by(DirtyVehicle.id)
                .limit(self.config.notes_per_round)
                .with_for_update(skip_locked=True)
            )
        ).all()
        # At most ``vehicles_per_round`` vehicles a round, in the order they were noted, however
        # many notes wait: the rest wait their turn, so a round after a long stop stays one short
        # transaction. A chosen vehicle's notes are all taken, so it is assembled once for every
        # batch it sent, not once a round for each.
        plates = list(dict.fromkeys(plate for (plate,) in notes))[:limit]
        since: dict[str, datetime] = {}
        if plates:
            taken = await session.execute(
                delete(DirtyVehicle)
                .where(DirtyVehicle.plate.in_(plates))
                .returning(DirtyVehicle.plate, DirtyVehicle.since)
            )
            for plate, at in taken:
                since[plate] = min(since.get(plate, at), at)
        room = limit - len(since)
        due = (
            (
                await session.execute(
                    select(TripRow.plate, func.min(TripRow.started_at))
                    .where(TripRow.recheck_at <= now)
                    .group_by(TripRow.plate)
                    .order_by(TripRow.plate)
                    .limit(room)
                )
            ).all()
            if room > 0
            else []
        )
        for plate, at in due:
            since[plate] = min(since.get(plate, at), at)
        if not since:
            return
        vehicles = {
            v.plate: v for v in await session.scalars(select(Vehicle).where(Vehicle.plate.in_(set(since))))
        }
        facilities = {f.code: f for f in await session.scalars(select(Facility))}
        register = _Register(
            vehicles={plate: _vehicle(v) for plate, v in vehicles.items()},
            facilities={code: _facility(f) for code, f in facilities.items()},
        )
        for plate in sorted(since):
            # Each vehicle in a savepoint: records no rule foresaw fail that vehicle alone, which is
            # noted again (at the back of the queue) while every other vehicle's trips go on.
            queued = len(uow.pending_events)
            try:
                async with session.begin_nested():
                    trips = await self._assemble(session, plate, since[plate], now, vehicles.get(plate))
                    found = check_trips(
                        trips, register.vehicles, register.facilities, now=now, settings=self.config.checks
                    )
                    recorded = await record_new(uow, found, {trip.id: trip for trip in trips}, facilities)
            except (DBAPIError, InterfaceError, ValueError, TypeError):
                del uow.pending_events[queued:]
                log.exception("chain round: the trips of vehicle %s are not assembled; noted again", plate)
                if self.metrics is not None:
                    self.metrics.vehicles_failed.inc()
                await session.execute(insert(DirtyVehicle).values(plate=plate, since=since[plate]))
                continue
            result.vehicles += 1
            result.trips += len(trips)
            for check in CHECKS:
                result.checks[check.value] += len(trips)
            result.violations.update(recorded)

    async def _assemble(
        self, session: AsyncSession, plate: str, since: datetime, now: datetime, vehicle: Vehicle | None
    ) -> list[chain.Trip]:
        """The vehicle's trips from its last boundary before ``since`` on, stored in place of the ones
        stored from there."""
        floor = since - self.config.lookback
        last_weighing = await session.scalar(
            select(func.max(Weighing.at)).where(
                Weighing.plate == plate, Weighing.at < since, Weighing.at >= floor
            )
        )
        last_return = await session.scalar(
            select(func.max(Movement.at)).where(
                Movement.plate == plate,
                Movement.at < since,
                Movement.at >= floor,
                Movement.kind == MovementKind.RETURNED_TO_DEPOT.value,
            )
        )
        anchor = max((at for at in (last_weighing, last_return) if at is not None), default=floor)
        # A stored trip running across the anchor (no boundary in the lookback, or a boundary that
        # came late) is assembled again whole, from its own start: cut there it would come back
        # as a second trip beside the stored one.
        # Only the vehicle's last trip before the anchor can run across it: one row from the
        # (plate, started_at) index, however long the vehicle's history.
        before = (
            await session.execute(
                select(TripRow.started_at, TripRow.ended_at)
                .where(TripRow.plate == plate, TripRow.started_at < anchor)
                .order_by(TripRow.started_at.desc())
                .limit(1)
            )
        ).first()
        if before is not None and (before.ended_at is None or before.ended_at > anchor):
            anchor = before.started_at
        pickups = list(
            await session.scalars(
                select(Pickup)
                .where(Pickup.plate == plate, Pickup.at >= anchor)
                .order_by(Pickup.at)
                .limit(RECORDS_PER_VEHICLE + 1)
            )
        )
        weighings = list(
            await session.scalars(
                select(Weighing)
                .where(Weighing.plate == plate, Weighing.at >= anchor)
                .order_by(Weighing.at)
                .limit(RECORDS_PER_VEHICLE + 1)
            )
        )
        movements = list(
            await session.scalars(
                select(Movement)
                .where(Movement.plate == plate, Movement.at >= anchor)
                .order_by(Movement.at)
                .limit(RECORDS_PER_VEHICLE + 1)
            )
        )
        if max(len(pickups), len(weighings), len(movements)) > RECORDS_PER_VEHICLE:
            # Trips assembled from the first records only would drop the newest, acknowledged
            # ones: the vehicle fails (noted again, counted, alerted on) rather than that.
            raise TooManyRecords(
                f"more than {RECORDS_PER_VEHICLE} records of one kind since {anchor.isoformat()}"
            )
        # One row per id, whatever the records: the upsert below cannot touch a row twice.
        trips = list(
            {
                trip.id: trip
                for trip in chain.assemble_trips(
                    [pickup_of(row) for row in pickups],
                    [_weighing(row) for row in weighings],
                    [_movement(row) for row in movements],
                )
            }.values()
        )
        kept = [trip.id for trip in trips]
        superseded = delete(TripRow).where(TripRow.plate == plate, TripRow.started_at >= anchor)
        if kept:
            superseded = superseded.where(TripRow.id.not_in(kept))
        await session.execute(superseded)
        rows = [self._trip_row(trip, vehicle, now) for trip in trips]
        # In pieces: one statement's parameters are bounded (32,767 in PostgreSQL's protocol).
        for start in range(0, len(rows), TRIPS_PER_STATEMENT):
            piece = rows[start : start + TRIPS_PER_STATEMENT]
            statement = insert(TripRow).values(piece)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[TripRow.id],
                    set_={name: statement.excluded[name] for name in piece[0] if name != "id"},
                )
            )
        return trips

    def _trip_row(self, trip: chain.Trip, vehicle: Vehicle | None, now: datetime) -> dict[str, Any]:
        return {
            "id": trip.id,
            "plate": trip.plate,
            "stream": stream_of(vehicle) if vehicle is not None else None,
            "district_code": vehicle.district_code if vehicle is not None else None,
            "start": trip.start.value,
            "started_at": trip.started_at,
            "ending": trip.end.value,
            "ended_at": trip.ended_at,
            "loaded_at": trip.loaded_at,
            "points": list(trip.points),
            "pickups": len(trip.pickups),
            "picked_up_kg": trip.picked_up_kg,
            "delivered_kg": trip.delivered_kg,
            "facility_code": trip.facility,
            "recheck_at": recheck_at(trip, now, self.config.checks),
            "updated_at": now,
        }

    # -- missed collections ----------------------------------------------------------------------

    async def _missed_apart(
        self, uow: UnitOfWork, now: datetime, since: datetime, result: RoundResult
    ) -> datetime:
        """The missed collections in a savepoint of their own: a step that fails (a statement timeout
        after a long stop) costs the vehicles' work nothing, and the next round tries a step half as
        long."""
        queued = len(uow.pending_events)
        try:
            async with uow.session.begin_nested():
                until = await self._missed(uow, now, since, result, self.missed_step)
        except DBAPIError:
            del uow.pending_events[queued:]
            log.exception("chain round: missed collections from %s not checked; a shorter step next", since)
            self.missed_step = max(self.missed_step / 2, MIN_MISSED_STEP)
            return since
        self.missed_step = self.config.missed_step
        return until

    async def _missed(
        self, uow: UnitOfWork, now: datetime, since: datetime, result: RoundResult, step: timedelta
    ) -> datetime:
        """Check the windows that closed in ``(since, until]``; returns ``until``."""
        session = uow.session
        until = min(now - self.config.missed_grace, since + step)
        if until <= since:
            return since
        # A window closes at most a day after the date it opens on.
        first = since.astimezone(chain.CITY_TIMEZONE).date() - timedelta(days=1)
        last = until.astimezone(chain.CITY_TIMEZONE).date()
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        # Most rounds see no window close: the routes are sifted by their windows, one per route and
        # day, before any point's visit is spelled out.
        routes = [route for route in await self._routes(session) if _closes_within(route, days, since, until)]
        visits = [v for day in days for v in scheduled_visits(routes, day) if since < v.closes_at <= until]
        result.visits = len(visits)
        result.checks[ViolationKind.MISSED_COLLECTION.value] += len(visits)
        if not visits:
            return until
        points = {visit.point for visit in visits}
        rows = await session.scalars(
            select(Pickup).where(
                Pickup.point_code.in_(points),
                Pickup.stream.in_({visit.stream.value for visit in visits}),
                Pickup.at >= min(visit.opens_at for visit in visits),
                Pickup.at < max(visit.closes_at for visit in visits),
            )
        )
        found = missed_collections(
            routes,
            [pickup_of(row) for row in rows],
            since=since,
            now=until,
        )
        result.violations.update(await record_new(uow, found, {}, {}))
        return until

    async def _routes(self, session: AsyncSession) -> list[Route]:
        fingerprint = str(
            (
                await session.execute(
                    select(
                        func.count(), func.max(RouteRow.updated_at), func.max(RouteRow.schedule_changed_at)
                    )
                )
            ).one()
        )
        if fingerprint != self.routes_fingerprint:
            self.routes = [
                route
                for row in await session.scalars(select(RouteRow).order_by(RouteRow.code))
                if (route := route_of(row)) is not None
            ]
            self.routes_fingerprint = fingerprint
        return self.routes


# -- the register and the records as the domain's values ------------------------------------------


@dataclass(frozen=True)
class _Register:
    vehicles: Mapping[str, chain.Vehicle]
    facilities: Mapping[str, chain.Facility]


def _vehicle(row: Vehicle) -> chain.Vehicle:
    # The register keeps no depot; the checks do not use it.
    return chain.Vehicle(row.plate, chain.VehicleType(row.kind), chain.Stream(stream_of(row)), depot="")


def _facility(row: Facility) -> chain.Facility:
    return chain.Facility(
        row.code,
        chain.FacilityKind(row.kind),
        frozenset(chain.Stream(stream) for stream in row.streams),
        frozenset(row.weighbridges),
    )


def route_of(row: RouteRow) -> Route | None:
    """A collection route as the schedule's; a route without a stream (a cleaning round) has no
    bins to lift and is not judged."""
    if row.stream is None:
        return None
    try:
        window = CollectionWindow.parse(row.time_window)
        return Route(
            row.code,
            row.plate,
            chain.Stream(row.stream),
            tuple(dict.fromkeys(row.stops)),
            (Schedule(frozenset(row.days), window),),
            effective_from=row.schedule_changed_at,
        )
    except ValueError as refused:
        log.warning("chain round: route %s is not judged: %s", row.code, refused)
        return None


def pickup_of(row: Pickup) -> chain.Pickup:
    load = chain.Stream(row.load_stream) if row.load_stream is not None else None
    return chain.Pickup(
        row.plate, row.point_code, row.rfid, chain.Stream(row.stream), row.weight_kg, row.at, load
    )


def _weighing(row: Weighing) -> chain.Weighing:
    return chain.Weighing(
        row.plate, row.facility_code, row.gross_kg, row.tare_kg, row.at, chain.Stream(row.stream)
    )


def _movement(row: Movement) -> chain.Movement:
    match row.kind:
        case MovementKind.DEPARTED_DEPOT:
            return chain.DepotDeparture(row.plate, row.place, row.at)
        case MovementKind.RETURNED_TO_DEPOT:
            return chain.DepotReturn(row.plate, row.place, row.at)
        case MovementKind.ARRIVED_AT_FACILITY:
            return chain.FacilityArrival(row.plate, row.place, row.at)
    return chain.Stop(row.plate, row.at, row.ended_at, row.lon or 0.0, row.lat or 0.0)


def _closes_within(route: Route, days: Sequence[date], since: datetime, until: datetime) -> bool:
    return any(
        since < schedule.window.on(day)[1] <= until
        for schedule in route.schedules
        for day in days
        if day.isoweekday() in schedule.weekdays
    )


def recheck_at(trip: chain.Trip, now: datetime, settings: CheckSettings) -> datetime | None:
    """When the trip's checks could find something with no new record: its open trip limit, or the
    stop limit of a stop still under way; None when nothing is pending."""
    loaded = trip.loaded_at
    if loaded is None:
        return None
    pending: list[datetime] = []
    if trip.end is chain.TripEnd.OPEN and now - loaded <= settings.open_trip_limit:
        pending.append(loaded + settings.open_trip_limit + timedelta(seconds=1))
    wait = settings.stop_limit + settings.open_stop_grace
    pending += [
        stop.at + wait
        for stop in trip.stops
        if stop.ended_at is None and stop.at >= loaded and now - stop.at < wait
    ]
    return min(pending, default=None)


# -- violations ---------------------------------------------------------------------------------


async def _point(session: AsyncSession, code: str) -> Place | None:
    point = await session.get(DropOffPoint, code)
    if point is not None:
        return Place(point.lon, point.lat, point.district_code, point.address)
    collection = await session.get(CollectionPoint, code)
    if collection is not None:
        return Place(collection.lon, collection.lat, collection.district_code, collection.address)
    return None


async def _place(
    session: AsyncSession, violation: Violation, trip: chain.Trip | None, facilities: Mapping[str, Facility]
) -> Place | None:
    """Where a violation is: its point, its facility, the stop, or the trip's last point served."""
    district: str | None = None
    if violation.plate is not None:
        vehicle = await session.get(Vehicle, violation.plate)
        district = vehicle.district_code if vehicle is not None else None
    if violation.point is not None:
        return await _point(session, violation.point)
    if violation.facility is not None:
        facility = facilities.get(violation.facility) or await session.get(Facility, violation.facility)
        if facility is not None:
            return Place(facility.lon, facility.lat, facility.district_code)
    if trip is not None and violation.kind is ViolationKind.UNLOADED_AT_UNREGISTERED_PLACE:
        stop = next((s for s in trip.stops if s.at == violation.at), None)
        if stop is not None:
            return Place(stop.lon, stop.lat, district)
    if trip is not None and trip.points:
        served = await _point(session, trip.points[-1])
        if served is not None:
            return Place(served.lon, served.lat, district or served.district_code)
    return None


async def record_new(
    uow: UnitOfWork,
    found: Sequence[Violation],
    trips: Mapping[uuid.UUID, chain.Trip],
    facilities: Mapping[str, Facility],
) -> Counter[str]:
    """Record the violations not stored yet; how many of each kind were new.

    The stored keys are read in one query first: a round over records it has seen before (every
    round over a vehicle with a trip still open) looks up no place for what it found before.
    """
    recorded: Counter[str] = Counter()
    if not found:
        return recorded
    keys = {violation.dedup_key[:200] for violation in found}
    known = set(
        await uow.session.scalars(select(ChainViolation.dedup_key).where(ChainViolation.dedup_key.in_(keys)))
    )
    for violation in found:
        if violation.dedup_key[:200] in known:
            continue
        trip = trips.get(violation.trip_id) if violation.trip_id is not None else None
        if await record(uow, violation, await _place(uow.session, violation, trip, facilities)):
            recorded[violation.kind.value] += 1
    return recorded


async def record(uow: UnitOfWork, violation: Violation, place: Place | None) -> bool:
    """Store the violation unless its dedup key is stored, and queue its event; whether it was new.

    A violation nowhere the service can place (a point since removed from the register) is stored
    but raises no case: a case needs a place.
    """
    stream = violation.stream.value if violation.stream is not None else None
    violation_id = new_id()
    category = category_of(violation.kind, stream)
    stored = await uow.session.scalar(
        insert(ChainViolation)
        .values(
            id=violation_id,
            dedup_key=violation.dedup_key[:200],
            kind=violation.kind.value,
            plate=violation.plate,
            point_code=violation.point,
            facility_code=violation.facility,
            trip_id=violation.trip_id,
            stream=stream,
            district_code=place.district_code if place is not None else None,
            at=violation.at,
            lon=place.lon if place is not None else None,
            lat=place.lat if place is not None else None,
            detail=violation.details[:500],
            category_code=category,
        )
        .on_conflict_do_nothing(index_elements=[ChainViolation.dedup_key])
        .returning(ChainViolation.id)
    )
    if stored is None:
        return False
    if place is None:
        log.warning("chain violation %s (%s) has no place: no case raised", stored, violation.kind.value)
        return True
    who = f"Vehicle {violation.plate}: " if violation.plate is not None else ""
    uow.publish(
        ViolationDetected(
            reference=str(stored),
            category_code=category,
            district_code=place.district_code,
            location=GeoPoint.of(place.lon, place.lat),
            address=place.address,
            description=f"{who}{violation.details}.",
            detected_at=violation.at,
            kind=WasteViolation(violation.kind.value),
            point_code=violation.point,
            vehicle_plate=violation.plate,
            severity="normal",
            stream=WasteStream(stream) if stream is not None else None,
            facility_code=violation.facility,
            trip_id=str(violation.trip_id) if violation.trip_id is not None else None,
        ),
        aggregate_id=str(stored),
        version=1,
    )
    return True
