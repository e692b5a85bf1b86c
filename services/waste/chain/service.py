"""The collection chain's intake and reads: records stored item by item in the caller's unit of work,
trips read with their records.

Each batch is judged item by item against the register (an unknown vehicle, point, bin or facility
is that item's refusal, with a problem code) and stored with one multi-row insert per table that
skips what is already there: a record's key is the domain's identity of it, so a batch sent twice,
or to two replicas at once, is stored once. The vehicles whose records were stored are noted in
``chain_dirty_vehicles`` in the same transaction: the chain round assembles their trips again.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal_column, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.errors import NotFound
from contract.waste import WasteStream
from services.waste.chain.models import (
    ChainViolation,
    DirtyVehicle,
    Movement,
    MovementKind,
    MovementSource,
    Pickup,
    TripRow,
    Weighing,
)
from services.waste.chain.schemas import (
    ArrivedIn,
    DepartedIn,
    ItemResult,
    MovementIn,
    PickupIn,
    RecordsResult,
    ReturnedIn,
    StoppedIn,
    WeighingIn,
)
from services.waste.models import Bin, CollectionPoint, DropOffPoint, Facility, Vehicle

# A vehicle's platform or a weighbridge that was offline keeps its records: up to a week late, and
# not from the future beyond a clock's drift.
LATEST_AHEAD = timedelta(minutes=5)
OLDEST_BEHIND = timedelta(days=7)


class UnknownTrip(NotFound):
    code = "waste.unknown_trip"
    title = "Unknown trip"


class UnknownChainViolation(NotFound):
    code = "waste.unknown_violation"
    title = "Unknown violation"


@dataclass
class Tally:
    """A batch's counts, added to the service's metrics once it commits."""

    records: Counter[tuple[str, str]] = field(default_factory=Counter)


def stream_of(vehicle: Vehicle) -> str:
    """The stream a vehicle's loads are counted under: a cleaning vehicle's sweepings are residual."""
    return vehicle.stream or WasteStream.OTHER.value


class _Batch:
    """Item results of one batch, and the rows to insert with the item each came from."""

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.results: dict[int, ItemResult] = {}
        self.rows: dict[Hashable, tuple[int, str, dict[str, Any]]] = {}
        self.size = size

    def refuse(self, index: int, key: str, code: str, detail: str) -> None:
        self.results[index] = ItemResult(index=index, key=key, outcome="refused", code=code, detail=detail)

    def take(self, index: int, key: str, identity: Hashable, row: dict[str, Any]) -> None:
        if identity in self.rows:
            self.results[index] = ItemResult(index=index, key=key, outcome="duplicate")
            return
        self.rows[identity] = (index, key, row)

    def answered(self, stored: dict[Hashable, str], tally: Tally) -> RecordsResult:
        """``stored``: the identities the insert wrote, each ``stored`` or ``updated``."""
        for identity, (index, key, _) in self.rows.items():
            outcome = stored.get(identity, "duplicate")
            self.results[index] = ItemResult(index=index, key=key, outcome=outcome)  # type: ignore[arg-type]
        listed = [self.results[index] for index in range(self.size)]
        counts = Counter(result.outcome for result in listed)
        for outcome, count in counts.items():
            tally.records[self.kind, outcome] += count
        return RecordsResult(
            received=self.size,
            stored=counts["stored"] + counts["updated"],
            duplicates=counts["duplicate"],
            refused=counts["refused"],
            results=listed,
        )


def _in_key_order(batch: _Batch, key: tuple[str, ...]) -> list[dict[str, Any]]:
    """The batch's rows sorted by their table's key: two batches overlapping in any order take the
    rows' locks in the same order, so they wait for each other rather than deadlock."""
    return sorted(
        (row for _, _, row in batch.rows.values()), key=lambda row: tuple(row[name] for name in key)
    )


async def _conflicts(
    session: AsyncSession,
    batch: _Batch,
    stored: dict[Hashable, str],
    model: Any,
    key: tuple[str, ...],
    values: tuple[str, ...],
) -> None:
    """Refuse the records already stored with other values under the same key (a tare corrected
    and sent again): answered ``duplicate`` they would read as kept, while the store keeps the first."""
    again = [(identity, row) for identity, (_, _, row) in batch.rows.items() if identity not in stored]
    if not again:
        return
    columns = [getattr(model, name) for name in (*key, *values)]
    found = await session.execute(
        select(*columns).where(
            tuple_(*columns[: len(key)]).in_([tuple(row[name] for name in key) for _, row in again])
        )
    )
    kept = {tuple(row[: len(key)]): tuple(row[len(key) :]) for row in found.all()}
    for identity, row in again:
        before = kept.get(tuple(row[name] for name in key))
        if before is not None and before != tuple(row[name] for name in values):
            index, item_key, _ = batch.rows.pop(identity)
            batch.refuse(
                index,
                item_key,
                "waste.conflicting_record",
                "a record of this vehicle, time and place is stored with other values; the first is kept",
            )


def _out_of_time(at: datetime, now: datetime) -> tuple[str, str] | None:
    if at > now + LATEST_AHEAD:
        return "waste.record_in_the_future", f"{at.isoformat()} is ahead of the service's clock"
    if at < now - OLDEST_BEHIND:
        return "waste.record_too_old", "records are taken up to 7 days late"
    return None


def _other_district(principal: Principal, district_code: str, what: str) -> tuple[str, str] | None:
    if principal.district is not None and district_code != principal.district:
        return "auth.other_district", f"{what} is not in district {principal.district}"
    return None


async def _vehicles(session: AsyncSession, plates: Iterable[str]) -> dict[str, Vehicle]:
    wanted = set(plates)
    return {v.plate: v for v in await session.scalars(select(Vehicle).where(Vehicle.plate.in_(wanted)))}


async def mark_dirty(session: AsyncSession, since: dict[str, datetime]) -> None:
    """Note the vehicles whose trips the round must assemble again, from the earliest record stored."""
    if since:
        await session.execute(
            insert(DirtyVehicle).values(
                [{"plate": plate, "since": at} for plate, at in sorted(since.items())]
            )
        )


def _earliest(rows: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    since: dict[str, datetime] = {}
    for row in rows:
        plate, at = row["plate"], row["at"]
        since[plate] = min(since.get(plate, at), at)
    return since


# -- pickups ------------------------------------------------------------------------------------


async def ingest_pickups(
    uow: UnitOfWork, items: Sequence[PickupIn], principal: Principal, tally: Tally
) -> RecordsResult:
    """Bins lifted at points. The tag names the bin, and the register gives its stream: a tag not
    registered, or registered at another drop-off point, is refused; at a collection point, a bin of
    a stream the point does not collect is."""
    session = uow.session
    now = await uow.now()
    vehicles = await _vehicles(session, (item.plate for item in items))
    codes = {item.point_code for item in items}
    drop_off = {
        p.code: p.district_code
        for p in await session.scalars(select(DropOffPoint).where(DropOffPoint.code.in_(codes)))
    }
    collection = {
        p.code: p
        for p in await session.scalars(select(CollectionPoint).where(CollectionPoint.code.in_(codes)))
    }
    bins = {
        b.rfid: b for b in await session.scalars(select(Bin).where(Bin.rfid.in_({i.rfid for i in items})))
    }
    batch = _Batch("pickup", len(items))
    for index, item in enumerate(items):
        key = f"{item.plate}|{item.rfid}|{item.at.isoformat()}"
        vehicle = vehicles.get(item.plate)
        bin_ = bins.get(item.rfid)
        at_collection_point = collection.get(item.point_code)
        problem: tuple[str, str] | None = None
        if vehicle is None:
            problem = ("waste.unknown_vehicle", f"no vehicle {item.plate}")
        elif item.point_code not in drop_off and at_collection_point is None:
            problem = ("waste.unknown_point", f"no drop-off or collection point {item.point_code}")
        elif bin_ is None:
            problem = ("waste.unknown_bin", f"no bin with tag {item.rfid}")
        elif at_collection_point is None and bin_.point_code != item.point_code:
            problem = ("waste.bin_elsewhere", f"bin {item.rfid} is registered at point {bin_.point_code}")
        elif at_collection_point is not None and bin_.stream not in at_collection_point.streams:
            problem = (
                "waste.stream_not_collected",
                f"collection point {item.point_code} does not collect {bin_.stream} waste",
            )
        else:
            point_district = (
                at_collection_point.district_code
                if at_collection_point is not None
                else drop_off[item.point_code]
            )
            problem = _other_district(principal, vehicle.district_code, f"vehicle {item.plate}")
            problem = problem or _other_district(principal, point_district, f"point {item.point_code}")
            problem = problem or _out_of_time(item.at, now)
        if problem is not None:
            batch.refuse(index, key, *problem)
            continue
        # The checks above refused an item without them.
        assert bin_ is not None
        assert vehicle is not None
        row = {
            "plate": item.plate,
            "at": item.at,
            "rfid": item.rfid,
            "point_code": item.point_code,
            "stream": bin_.stream,
            # The load's stream when the bin was lifted: a later change of the vehicle's stream in
            # the register does not make this lift a mixed load when its trip is checked again.
            "load_stream": stream_of(vehicle),
            "weight_kg": item.weight_kg,
        }
        batch.take(index, key, (item.plate, item.at, item.rfid), row)
    stored: dict[Hashable, str] = {}
    rows = _in_key_order(batch, ("plate", "at", "rfid"))
    if rows:
        written = await session.execute(
            insert(Pickup)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(Pickup.plate, Pickup.at, Pickup.rfid)
        )
        stored = {(plate, at, rfid): "stored" for plate, at, rfid in written.all()}
        await _conflicts(session, batch, stored, Pickup, ("plate", "at", "rfid"), ("point_code", "weight_kg"))
        await mark_dirty(session, _earliest(r for r in rows if (r["plate"], r["at"], r["rfid"]) in stored))
    return batch.answered(stored, tally)


# -- weighings ----------------------------------------------------------------------------------


async def ingest_weighings(
    uow: UnitOfWork, items: Sequence[WeighingIn], principal: Principal, tally: Tally
) -> RecordsResult:
    """Weighbridge records at facilities: a weighbridge the facility has not registered, a tare above
    the gross, an unknown vehicle or facility is refused."""
    session = uow.session
    now = await uow.now()
    vehicles = await _vehicles(session, (item.plate for item in items))
    facilities = {
        f.code: f
        for f in await session.scalars(
            select(Facility).where(Facility.code.in_({item.facility_code for item in items}))
        )
    }
    batch = _Batch("weighing", len(items))
    for index, item in enumerate(items):
        key = f"{item.plate}|{item.facility_code}|{item.at.isoformat()}"
        vehicle = vehicles.get(item.plate)
        facility = facilities.get(item.facility_code)
        problem: tuple[str, str] | None = None
        if facility is None:
            problem = ("waste.unknown_facility", f"no facility {item.facility_code}")
        elif vehicle is None:
            problem = ("waste.unknown_vehicle", f"no vehicle {item.plate}")
        elif facility.weighbridges and item.weighbridge not in facility.weighbridges:
            problem = (
                "waste.unknown_weighbridge",
                f"facility {facility.code} has no weighbridge {item.weighbridge}",
            )
        elif item.tare_kg > item.gross_kg:
            problem = (
                "waste.tare_above_gross",
                f"a tare of {item.tare_kg} kg above the gross {item.gross_kg} kg",
            )
        else:
            problem = _other_district(principal, facility.district_code, f"facility {facility.code}")
            problem = problem or _other_district(principal, vehicle.district_code, f"vehicle {item.plate}")
            problem = problem or _out_of_time(item.at, now)
        if problem is not None:
            batch.refuse(index, key, *problem)
            continue
        assert vehicle is not None  # the checks above refused an item without one
        row = {
            "plate": item.plate,
            "at": item.at,
            "facility_code": item.facility_code,
            "weighbridge": item.weighbridge,
            "gross_kg": item.gross_kg,
            "tare_kg": item.tare_kg,
            "net_kg": item.gross_kg - item.tare_kg,
            "stream": stream_of(vehicle),
            "district_code": vehicle.district_code,
        }
        batch.take(index, key, (item.plate, item.at, item.facility_code), row)
    stored: dict[Hashable, str] = {}
    rows = _in_key_order(batch, ("plate", "at", "facility_code"))
    if rows:
        written = await session.execute(
            insert(Weighing)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(Weighing.plate, Weighing.at, Weighing.facility_code)
        )
        stored = {(plate, at, code): "stored" for plate, at, code in written.all()}
        await _conflicts(
            session,
            batch,
            stored,
            Weighing,
            ("plate", "at", "facility_code"),
            ("weighbridge", "gross_kg", "tare_kg"),
        )
        await mark_dirty(
            session, _earliest(r for r in rows if (r["plate"], r["at"], r["facility_code"]) in stored)
        )
    return batch.answered(stored, tally)


# -- movements ----------------------------------------------------------------------------------


def _movement_row(item: MovementIn) -> dict[str, Any]:
    row: dict[str, Any] = {
        "plate": item.plate,
        "at": item.at,
        "kind": item.kind,
        "place": "",
        "ended_at": None,
        "lon": None,
        "lat": None,
        "source": MovementSource.PLATFORM.value,
    }
    match item:
        case DepartedIn() | ReturnedIn():
            row["place"] = item.depot
        case ArrivedIn():
            row["place"] = item.facility_code
        case StoppedIn():
            row |= {"ended_at": item.ended_at, "lon": item.location.lon, "lat": item.location.lat}
    return row


async def ingest_movements(
    uow: UnitOfWork, items: Sequence[MovementIn], principal: Principal, tally: Tally
) -> RecordsResult:
    """Movements reported by the vehicles' platforms. A stop sent again with its end is ``updated``;
    anything else sent again is a duplicate."""
    session = uow.session
    now = await uow.now()
    vehicles = await _vehicles(session, (item.plate for item in items))
    arrivals = {item.facility_code for item in items if isinstance(item, ArrivedIn)}
    facilities = set((await session.scalars(select(Facility.code).where(Facility.code.in_(arrivals)))).all())
    batch = _Batch("movement", len(items))
    for index, item in enumerate(items):
        row = _movement_row(item)
        key = f"{item.plate}|{item.kind}|{row['place']}|{item.at.isoformat()}"
        vehicle = vehicles.get(item.plate)
        problem: tuple[str, str] | None = None
        if vehicle is None:
            problem = ("waste.unknown_vehicle", f"no vehicle {item.plate}")
        elif isinstance(item, ArrivedIn) and item.facility_code not in facilities:
            problem = ("waste.unknown_facility", f"no facility {item.facility_code}")
        elif isinstance(item, StoppedIn) and item.ended_at is not None and item.ended_at < item.at:
            problem = ("waste.stop_ends_before_it_starts", "a stop's end is before its start")
        else:
            problem = _other_district(principal, vehicle.district_code, f"vehicle {item.plate}")
            problem = problem or _out_of_time(item.at, now)
            if problem is None and isinstance(item, StoppedIn) and item.ended_at is not None:
                problem = _out_of_time(item.ended_at, now)
        if problem is not None:
            batch.refuse(index, key, *problem)
            continue
        batch.take(index, key, (item.plate, item.at, item.kind, row["place"]), row)
    stored: dict[Hashable, str] = {}
    rows = _in_key_order(batch, ("plate", "at", "kind", "place"))
    if rows:
        for identity, outcome in (await store_movements(session, rows)).items():
            stored[identity] = outcome
        # A movement the positions showed first is the platform's too now: reading the positions
        # again (a late one) must not take away what the platform was told is stored.
        await session.execute(
            PLATFORM_TOO,
            {
                "plates": [r["plate"] for r in rows],
                "ats": [r["at"] for r in rows],
                "kinds": [r["kind"] for r in rows],
                "places": [r["place"] for r in rows],
            },
        )
    return batch.answered(stored, tally)


PLATFORM_TOO = text(
    "UPDATE movements m SET source = 'platform' FROM unnest(CAST(:plates AS text[]), "
    "CAST(:ats AS timestamptz[]), CAST(:kinds AS text[]), CAST(:places AS text[])) AS r(plate, at, kind, place) "
    "WHERE m.source = 'positions' AND (m.plate, m.at, m.kind, m.place) = (r.plate, r.at, r.kind, r.place)"
)
# Rows a statement inserts at most: eight parameters each, well under the protocol's 32,767.
MOVEMENT_SLICE = 1000


async def store_movements(
    session: AsyncSession, rows: Sequence[dict[str, Any]]
) -> dict[tuple[str, datetime, str, str], str]:
    """Store movements by their identity (plate, time, kind, place), whichever source reports them,
    and note their vehicles for the round; returns each stored (``stored``) or ended (``updated``)
    one. A stop stored under way takes its end; nothing else a movement sent again says changes it.
    ``rows`` are in key order, so two transactions storing the same movements cannot deadlock."""
    stored: dict[tuple[str, datetime, str, str], str] = {}
    for start in range(0, len(rows), MOVEMENT_SLICE):
        statement = insert(Movement).values(list(rows[start : start + MOVEMENT_SLICE]))
        written: Any = await session.execute(
            statement.on_conflict_do_update(
                constraint="pk_movements",
                set_={"ended_at": statement.excluded.ended_at},
                where=(Movement.kind == MovementKind.STOPPED.value)
                & Movement.ended_at.is_(None)
                & statement.excluded.ended_at.is_not(None),
            ).returning(
                Movement.plate,
                Movement.at,
                Movement.kind,
                Movement.place,
                literal_column("xmax = 0").label("inserted"),
            )
        )
        for plate, at, kind, place, inserted in written.all():
            stored[(plate, at, kind, place)] = "stored" if inserted else "updated"
    await mark_dirty(
        session, _earliest(r for r in rows if (r["plate"], r["at"], r["kind"], r["place"]) in stored)
    )
    return stored


# -- reads --------------------------------------------------------------------------------------


async def vehicle_movements(
    session: AsyncSession,
    plate: str,
    since: datetime,
    until: datetime,
    limit: int,
    after: tuple[datetime, str, str] | None,
) -> list[Movement]:
    """A vehicle's movements in ``[since, until)`` in time order, after a page's last (time, kind,
    place): one range of the movements' primary key."""
    query = select(Movement).where(Movement.plate == plate, Movement.at >= since, Movement.at < until)
    if after is not None:
        query = query.where(tuple_(Movement.at, Movement.kind, Movement.place) > after)
    query = query.order_by(Movement.at, Movement.kind, Movement.place).limit(limit + 1)
    return list((await session.scalars(query)).all())


async def trip(session: AsyncSession, trip_id: uuid.UUID) -> TripRow:
    found = await session.get(TripRow, trip_id)
    if found is None:
        raise UnknownTrip(f"no trip {trip_id}")
    return found


async def trip_records(
    session: AsyncSession, found: TripRow
) -> tuple[list[Pickup], Weighing | None, list[ChainViolation]]:
    """A trip's pickups (its vehicle's in ``[started_at, ended_at)``: a lift at the instant of the
    unloading is the next trip's), its weighing, its violations."""
    pickups = select(Pickup).where(Pickup.plate == found.plate, Pickup.at >= found.started_at)
    if found.ended_at is not None:
        pickups = pickups.where(Pickup.at < found.ended_at)
    listed = list((await session.scalars(pickups.order_by(Pickup.at, Pickup.rfid).limit(5000))).all())
    weighing = None
    if found.ending == "unloaded" and found.ended_at is not None and found.facility_code is not None:
        weighing = await session.get(Weighing, (found.plate, found.ended_at, found.facility_code))
    violations = (
        await session.scalars(
            select(ChainViolation)
            .where(ChainViolation.trip_id == found.id)
            .order_by(ChainViolation.at, ChainViolation.id)
            .limit(500)
        )
    ).all()
    return listed, weighing, list(violations)
