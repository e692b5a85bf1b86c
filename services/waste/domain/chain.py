"""The collection chain's records and its trips: the pickups a vehicle makes between leaving its depot
(or its previous unloading) and its next unloading, tying points → vehicle → facility.

Every record is append-only and may arrive late, out of order or twice: a trip is computed from the
records, never edited, so two replicas given the same records compute the same trips with the same
ids. Positions are not read here: they become movements first (left the depot, back at the depot,
arrived at a facility, stopped outside every registered place), by ``chain_movements`` or by the
service's own geofences, and the trips take those.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from citygrid.clock import CITY_TIMEZONE

__all__ = [
    "CITY_TIMEZONE",
    "DepotDeparture",
    "DepotReturn",
    "Facility",
    "FacilityArrival",
    "FacilityKind",
    "Movement",
    "Pickup",
    "Stop",
    "Stream",
    "Trip",
    "TripEnd",
    "TripStart",
    "Vehicle",
    "VehicleType",
    "Weighing",
    "assemble_trips",
    "distinct_pickups",
    "distinct_weighings",
    "instant",
    "trip_id",
]


class Stream(StrEnum):
    FOOD = "food"
    RECYCLABLE = "recyclable"
    HAZARDOUS = "hazardous"
    OTHER = "other"


class VehicleType(StrEnum):
    COLLECTION = "collection"
    CLEANING = "cleaning"


class FacilityKind(StrEnum):
    INCINERATION = "incineration"
    LANDFILL = "landfill"
    FOOD_WASTE_TREATMENT = "food_waste_treatment"
    RECYCLING = "recycling"
    TRANSFER_STATION = "transfer_station"


def _aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry its time zone")


def _mass(value: float, what: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a non-negative number of kg, not {value}")


def instant(moment: datetime) -> str:
    """The moment as UTC text to the microsecond: the same instant gives the same text in any zone."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# -- the register --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A sanitation vehicle: it carries one stream and starts its day at its depot."""

    plate: str
    type: VehicleType
    stream: Stream
    depot: str


@dataclass(frozen=True, slots=True)
class Facility:
    """An end facility or a transfer station, the streams it accepts and its weighbridges' ids."""

    code: str
    kind: FacilityKind
    accepts: frozenset[Stream]
    weighbridges: frozenset[str] = frozenset()


# -- the records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pickup:
    """A bin lifted into a vehicle at a point: its RFID tag, its stream, the on-truck weight."""

    plate: str
    point: str
    tag: str
    stream: Stream
    weight_kg: float
    at: datetime
    # The vehicle's stream when it lifted the bin, as the register had it then (None: not known,
    # judged against the vehicle's stream now).
    load_stream: Stream | None = None

    def __post_init__(self) -> None:
        _aware(self.at, "a pickup's time")
        _mass(self.weight_kg, "a pickup's weight")


@dataclass(frozen=True, slots=True)
class Weighing:
    """A weighbridge record of an unloading at a facility: gross in, tare out."""

    plate: str
    facility: str
    gross_kg: float
    tare_kg: float
    at: datetime
    # The vehicle's stream when it was weighed, as the register had it then.
    load_stream: Stream | None = None

    def __post_init__(self) -> None:
        _aware(self.at, "a weighing's time")
        _mass(self.gross_kg, "a gross weight")
        _mass(self.tare_kg, "a tare weight")
        if self.tare_kg > self.gross_kg:
            raise ValueError(f"a tare of {self.tare_kg} kg cannot exceed the gross {self.gross_kg} kg")

    @property
    def net_kg(self) -> float:
        return self.gross_kg - self.tare_kg


# -- the movements the service derives from positions ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepotDeparture:
    plate: str
    depot: str
    at: datetime

    def __post_init__(self) -> None:
        _aware(self.at, "a departure's time")


@dataclass(frozen=True, slots=True)
class DepotReturn:
    plate: str
    depot: str
    at: datetime

    def __post_init__(self) -> None:
        _aware(self.at, "a return's time")


@dataclass(frozen=True, slots=True)
class FacilityArrival:
    """The vehicle entered a facility's geofence; the weighbridge record, not this, is the unloading."""

    plate: str
    facility: str
    at: datetime

    def __post_init__(self) -> None:
        _aware(self.at, "an arrival's time")


@dataclass(frozen=True, slots=True)
class Stop:
    """A stop outside every registered place (point, depot, facility), from ``at``; ``ended_at`` is
    None while the vehicle is still standing there."""

    plate: str
    at: datetime
    ended_at: datetime | None
    lon: float
    lat: float

    def __post_init__(self) -> None:
        _aware(self.at, "a stop's start")
        if self.ended_at is not None:
            _aware(self.ended_at, "a stop's end")
            if self.ended_at < self.at:
                raise ValueError("a stop cannot end before it starts")


Movement = DepotDeparture | DepotReturn | FacilityArrival | Stop


# -- trips ---------------------------------------------------------------------------------------------


class TripStart(StrEnum):
    DEPOT = "depot"  # the vehicle left its depot
    UNLOADING = "unloading"  # the vehicle's previous unloading
    FIRST_PICKUP = "first_pickup"  # no departure seen: the records start with a pickup


class TripEnd(StrEnum):
    UNLOADED = "unloaded"  # a weighbridge record
    RETURNED_TO_DEPOT = "returned_to_depot"  # back at the depot with its load
    OPEN = "open"  # not ended yet


# A fixed namespace, so a trip's id depends on its vehicle and start alone, on every replica.
_TRIP_NAMESPACE: Final = uuid.UUID("6f1d3c2e-8b4a-5e7f-9a0b-3c5d7e9f1a2b")


def trip_id(plate: str, started_at: datetime) -> uuid.UUID:
    """The id of the trip that ``plate`` started at ``started_at`` (a UUIDv5: the same on every replica)."""
    _aware(started_at, "a trip's start")
    return uuid.uuid5(_TRIP_NAMESPACE, f"{plate}|{instant(started_at)}")


@dataclass(frozen=True)
class Trip:
    """One load: its pickups, in time order, from ``started_at`` (in) to ``ended_at`` (out)."""

    id: uuid.UUID
    plate: str
    start: TripStart
    started_at: datetime
    end: TripEnd = TripEnd.OPEN
    ended_at: datetime | None = None
    pickups: tuple[Pickup, ...] = ()
    unloading: Weighing | None = None
    arrivals: tuple[FacilityArrival, ...] = ()
    stops: tuple[Stop, ...] = ()

    @property
    def points(self) -> tuple[str, ...]:
        """The points served, each once, in the order first served."""
        return tuple(dict.fromkeys(pickup.point for pickup in self.pickups))

    @property
    def loaded_at(self) -> datetime | None:
        """When the vehicle took on its first bin of the trip; None for a trip without pickups."""
        return self.pickups[0].at if self.pickups else None

    @property
    def picked_up_kg(self) -> float:
        return math.fsum(pickup.weight_kg for pickup in self.pickups)

    @property
    def delivered_kg(self) -> float | None:
        """The weighbridge's net; None until the trip is unloaded."""
        return self.unloading.net_kg if self.unloading is not None else None

    @property
    def facility(self) -> str | None:
        return self.unloading.facility if self.unloading is not None else None


# -- assembly ------------------------------------------------------------------------------------------

Record = Pickup | Weighing | Movement

# What comes first among records of one instant: a boundary before what it bounds, so a pickup at
# the moment of an unloading or a departure belongs to the trip that starts then.
_RANK: Final[dict[type[Any], int]] = {
    Weighing: 0,
    DepotReturn: 1,
    DepotDeparture: 2,
    FacilityArrival: 3,
    Stop: 4,
    Pickup: 5,
}


def _order(record: Record) -> tuple[Any, ...]:
    """A total order over one vehicle's records, so their input order never matters."""
    head = (record.at, _RANK[type(record)])
    match record:
        case Pickup():
            return (*head, record.tag, record.point, record.stream, record.weight_kg)
        case Weighing():
            return (*head, record.facility, record.gross_kg, record.tare_kg)
        case DepotDeparture() | DepotReturn():
            return (*head, record.depot)
        case FacilityArrival():
            return (*head, record.facility)
        case Stop():
            # An ended stop before the same stop reported while under way: the ended one is kept.
            ended = record.ended_at
            return (*head, ended is None, ended or record.at, record.lon, record.lat)
    raise TypeError(f"not a chain record: {record!r}")


def _identity(record: Record) -> tuple[Any, ...]:
    """What makes two records the same one, resent: the first in ``_order`` is kept."""
    match record:
        case Pickup():
            return ("pickup", record.plate, record.tag, record.at)
        case Weighing():
            return ("weighing", record.plate, record.facility, record.at)
        case DepotDeparture() | DepotReturn():
            return (type(record).__name__, record.plate, record.at)
        case FacilityArrival():
            return ("arrival", record.plate, record.facility, record.at)
        case Stop():
            return ("stop", record.plate, record.at)
    raise TypeError(f"not a chain record: {record!r}")


def _distinct(records: Iterable[Record]) -> list[Record]:
    kept: dict[tuple[Any, ...], Record] = {}
    for record in sorted(records, key=lambda r: (r.plate, *_order(r))):
        kept.setdefault(_identity(record), record)
    return list(kept.values())


def distinct_pickups(pickups: Iterable[Pickup]) -> list[Pickup]:
    """The pickups in time order, each once: the same vehicle, tag and time is one lift."""
    return [p for p in _distinct(pickups) if isinstance(p, Pickup)]


def distinct_weighings(weighings: Iterable[Weighing]) -> list[Weighing]:
    """The weighings in time order, each once: the same vehicle, facility and time is one record."""
    return [w for w in _distinct(weighings) if isinstance(w, Weighing)]


@dataclass
class _Open:
    plate: str
    start: TripStart
    started_at: datetime
    pickups: list[Pickup] = field(default_factory=list)
    arrivals: list[FacilityArrival] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)

    def close(self, end: TripEnd, at: datetime | None, unloading: Weighing | None = None) -> Trip:
        return Trip(
            id=trip_id(self.plate, self.started_at),
            plate=self.plate,
            start=self.start,
            started_at=self.started_at,
            end=end,
            ended_at=at,
            pickups=tuple(self.pickups),
            unloading=unloading,
            arrivals=tuple(self.arrivals),
            stops=tuple(self.stops),
        )


def _vehicle_trips(plate: str, records: Sequence[Record]) -> list[Trip]:
    trips: list[Trip] = []
    current: _Open | None = None
    for record in records:
        match record:
            case Weighing():
                # Without an open trip the load was taken on before the records given: the
                # weighing closes a trip that is not here, and only starts the next. A second
                # weighing at the very instant of the first (two weighbridges' clocks, a record
                # sent under two facility codes) closes nothing: an empty trip ending where it
                # starts carried nothing, and would share the next trip's id.
                if current is not None and not (current.started_at == record.at and not current.pickups):
                    trips.append(current.close(TripEnd.UNLOADED, record.at, record))
                current = _Open(plate, TripStart.UNLOADING, record.at)
            case DepotReturn():
                if current is not None and current.pickups:
                    trips.append(current.close(TripEnd.RETURNED_TO_DEPOT, record.at))
                current = None  # an empty vehicle back at the depot made no trip
            case DepotDeparture():
                # A loaded vehicle leaving the depot still carries its load (its return was not
                # seen): the trip goes on. An empty one starts afresh.
                if current is None or not current.pickups:
                    current = _Open(plate, TripStart.DEPOT, record.at)
            case Pickup():
                if current is None:
                    current = _Open(plate, TripStart.FIRST_PICKUP, record.at)
                current.pickups.append(record)
            case FacilityArrival():
                if current is not None:
                    current.arrivals.append(record)
            case Stop():
                if current is not None:
                    current.stops.append(record)
    if current is not None and current.pickups:
        trips.append(current.close(TripEnd.OPEN, None))
    return trips


def assemble_trips(
    pickups: Iterable[Pickup], weighings: Iterable[Weighing], movements: Iterable[Movement] = ()
) -> list[Trip]:
    """Every vehicle's trips from its records, in any order and with duplicates, by plate then start.

    A trip starts when the vehicle leaves its depot empty, at its previous unloading, or, with
    neither seen, at its first pickup; it ends at its next weighing (unloaded) or back at the depot
    (returned with its load). A trip still open at the last record is returned open once it carries
    something: an empty vehicle on the road has made no trip yet.

    The records given should start at a vehicle's boundary (a departure or a weighing, which then only
    starts the next trip): a trip cut off at its start would start at its first pickup and get
    another id than the whole one.
    """
    by_plate: dict[str, list[Record]] = defaultdict(list)
    for record in _distinct([*pickups, *weighings, *movements]):
        by_plate[record.plate].append(record)
    return [trip for plate in sorted(by_plate) for trip in _vehicle_trips(plate, by_plate[plate])]
