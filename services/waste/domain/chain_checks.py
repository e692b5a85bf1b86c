"""The checks over assembled trips: mixed loads, weights that do not match, trips never unloaded,
loaded vehicles standing outside every registered place.

Each violation carries a dedup key built from what it is about (a bin lift, a weighing, a trip, a
stop), never from when it was found: a check run again over the same records, by any replica,
finds the same keys, and the service stores each key once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from uuid import UUID

from services.waste.domain.chain import Facility, Stream, Trip, TripEnd, Vehicle, instant

__all__ = [
    "DEFAULT_CHECKS",
    "CheckSettings",
    "Violation",
    "ViolationKind",
    "check_trips",
    "mixed_loads",
    "unfinished_trips",
    "unregistered_unloadings",
    "weight_mismatch",
    "weight_mismatches",
]


class ViolationKind(StrEnum):
    """The chain's violations; the first two are the contract's ``WasteViolation`` values, the
    others are not in the contract yet."""

    MIXED_LOAD = "mixed_load"
    MISSED_COLLECTION = "missed_collection"
    WEIGHT_MISMATCH = "weight_mismatch"
    TRIP_NOT_UNLOADED = "trip_not_unloaded"
    UNLOADED_AT_UNREGISTERED_PLACE = "unloaded_at_unregistered_place"


@dataclass(frozen=True, slots=True)
class Violation:
    """A violation found: at a point (a bin, a schedule) or a facility, or on the road (neither)."""

    kind: ViolationKind
    plate: str | None
    point: str | None
    facility: str | None
    at: datetime
    details: str
    dedup_key: str
    trip_id: UUID | None = None
    stream: Stream | None = None  # the load's (the vehicle's) or, for a missed collection, the round's


@dataclass(frozen=True)
class CheckSettings:
    """The thresholds of the trip checks.

    A weighbridge net differs from the pickups' sum beyond tolerance when the difference is above
    both ``weight_tolerance`` × the net and ``weight_floor_kg``: the relative tolerance governs a
    full load, the floor a small one, where on-truck scales' error per bin adds up to more than the
    percentage.
    """

    weight_tolerance: float = 0.10
    weight_floor_kg: float = 200.0
    open_trip_limit: timedelta = timedelta(hours=12)
    stop_limit: timedelta = timedelta(minutes=10)
    # A stop reported under way, with nothing of the vehicle since, is judged only this long after
    # the stop limit: its end may be in the platform's next upload, or lost with it.
    open_stop_grace: timedelta = timedelta(minutes=20)

    def __post_init__(self) -> None:
        if not 0 <= self.weight_tolerance < 1 or math.isnan(self.weight_tolerance):
            raise ValueError(f"a weight tolerance is a fraction in [0, 1), not {self.weight_tolerance}")
        if not (math.isfinite(self.weight_floor_kg) and self.weight_floor_kg >= 0):
            raise ValueError(f"a weight floor is a non-negative number of kg, not {self.weight_floor_kg}")
        if self.open_trip_limit <= timedelta(0) or self.stop_limit <= timedelta(0):
            raise ValueError("open_trip_limit and stop_limit must be positive durations")
        if self.open_stop_grace < timedelta(0):
            raise ValueError("open_stop_grace must not be negative")


DEFAULT_CHECKS: Final = CheckSettings()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _duration(duration: timedelta) -> str:
    hours, minutes = divmod(int(duration.total_seconds()) // 60, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"


def mixed_loads(
    trips: Iterable[Trip], vehicles: Mapping[str, Vehicle], facilities: Mapping[str, Facility]
) -> list[Violation]:
    """Bins of another stream than the vehicle's, and unloadings at a facility that refuses it.

    One violation per bin lift (at its point) and per unloading (at its facility). The vehicle's
    stream is the one it had when it lifted the bin or was weighed (``load_stream``), so a change in
    the register judges no earlier load again; only a record without it is judged by the register's
    stream now. A vehicle or a facility the register does not know is not judged: the service refuses
    such records at intake.
    """
    found: list[Violation] = []
    for trip in trips:
        vehicle = vehicles.get(trip.plate)
        if vehicle is None:
            continue
        for pickup in trip.pickups:
            load = pickup.load_stream or vehicle.stream
            if pickup.stream != load:
                found.append(
                    Violation(
                        kind=ViolationKind.MIXED_LOAD,
                        plate=trip.plate,
                        point=pickup.point,
                        facility=None,
                        at=pickup.at,
                        details=f"a {load} vehicle lifted {pickup.stream} bin {pickup.tag}",
                        dedup_key=f"mixed_load|{trip.plate}|bin|{pickup.tag}|{instant(pickup.at)}",
                        trip_id=trip.id,
                        stream=load,
                    )
                )
        unloading = trip.unloading
        facility = facilities.get(unloading.facility) if unloading is not None else None
        load = (unloading.load_stream if unloading is not None else None) or vehicle.stream
        if unloading is not None and facility is not None and load not in facility.accepts:
            accepted = ", ".join(sorted(facility.accepts)) or "nothing"
            found.append(
                Violation(
                    kind=ViolationKind.MIXED_LOAD,
                    plate=trip.plate,
                    point=None,
                    facility=facility.code,
                    at=unloading.at,
                    details=f"a {load} load unloaded at {facility.code}, which accepts {accepted}",
                    dedup_key=f"mixed_load|{trip.plate}|facility|{facility.code}|{instant(unloading.at)}",
                    trip_id=trip.id,
                    stream=load,
                )
            )
    return found


def weight_mismatch(
    picked_up_kg: float, delivered_kg: float, settings: CheckSettings = DEFAULT_CHECKS
) -> bool:
    """Whether the weighbridge net differs from the pickups' sum beyond tolerance (see CheckSettings).

    The net is the reference: the weighbridge is the certified instrument, the on-truck scale an
    estimate. A difference exactly at the allowance is within it.
    """
    allowed = max(settings.weight_tolerance * delivered_kg, settings.weight_floor_kg)
    return abs(delivered_kg - picked_up_kg) > allowed


def weight_mismatches(trips: Iterable[Trip], settings: CheckSettings = DEFAULT_CHECKS) -> list[Violation]:
    """Unloaded trips whose net is off their pickups' sum. A trip without pickups (a vehicle without
    an RFID reader, a cleaning vehicle) has nothing to compare and is not judged."""
    found: list[Violation] = []
    for trip in trips:
        unloading = trip.unloading
        if unloading is None or not trip.pickups:
            continue
        picked, delivered = trip.picked_up_kg, unloading.net_kg
        if weight_mismatch(picked, delivered, settings):
            share = f" ({(delivered - picked) / delivered:+.0%} of the net)" if delivered > 0 else ""
            found.append(
                Violation(
                    kind=ViolationKind.WEIGHT_MISMATCH,
                    plate=trip.plate,
                    point=None,
                    facility=unloading.facility,
                    at=unloading.at,
                    details=(
                        f"picked up {picked:.0f} kg in {_count(len(trip.pickups), 'bin')}, "
                        f"weighed {delivered:.0f} kg net{share}"
                    ),
                    # By the unloading, not the trip's id: a late record before the trip's
                    # first pickup moves its start (and its id), never its unloading.
                    dedup_key=f"weight_mismatch|{trip.plate}|{unloading.facility}|{instant(unloading.at)}",
                    trip_id=trip.id,
                )
            )
    return found


def unfinished_trips(
    trips: Iterable[Trip], now: datetime, settings: CheckSettings = DEFAULT_CHECKS
) -> list[Violation]:
    """Loaded trips back at the depot, and loaded trips still open ``open_trip_limit`` after their
    first pickup (at that moment, so the time does not depend on when the check ran). One per load:
    a trip found overdue and then back at the depot keeps the overdue one's key, and the service
    keeps the first it stored."""
    found: list[Violation] = []
    for trip in trips:
        loaded_at = trip.loaded_at
        if loaded_at is None:
            continue
        # Keyed by what does not move when a late record comes: the return to the depot, or the load's
        # first bin for a trip overdue (an overdue trip that then returns keeps the overdue key).
        key = f"trip_not_unloaded|{trip.plate}|{instant(loaded_at)}"
        if trip.end is TripEnd.RETURNED_TO_DEPOT and trip.ended_at is not None:
            at = trip.ended_at
            if at - loaded_at <= settings.open_trip_limit:
                key = f"trip_not_unloaded|{trip.plate}|returned|{instant(at)}"
            details = f"returned to the depot with {trip.picked_up_kg:.0f} kg from {_count(len(trip.points), 'point')}"
            if trip.arrivals:
                seen = ", ".join(dict.fromkeys(arrival.facility for arrival in trip.arrivals))
                details += f"; at {seen} without a weighbridge record"
        elif trip.end is TripEnd.OPEN and now - loaded_at > settings.open_trip_limit:
            at = loaded_at + settings.open_trip_limit
            details = f"loaded for more than {_duration(settings.open_trip_limit)} without unloading"
        else:
            continue
        found.append(
            Violation(
                kind=ViolationKind.TRIP_NOT_UNLOADED,
                plate=trip.plate,
                point=None,
                facility=None,
                at=at,
                details=details,
                dedup_key=key,
                trip_id=trip.id,
            )
        )
    return found


def unregistered_unloadings(
    trips: Iterable[Trip], now: datetime, settings: CheckSettings = DEFAULT_CHECKS
) -> list[Violation]:
    """Stops of a loaded vehicle (after its trip's first pickup) outside every registered place that
    lasted at least ``stop_limit``.

    A stop reported without its end ended, at the latest, at the vehicle's next record of the trip
    (a lift, an arrival, another stop, its unloading). With no record since, it counts up to ``now``
    but is judged only ``open_stop_grace`` after the stop limit: its end may still come.
    """
    found: list[Violation] = []
    for trip in trips:
        loaded_at = trip.loaded_at
        if loaded_at is None:
            continue
        later = sorted(
            [
                *(pickup.at for pickup in trip.pickups),
                *(arrival.at for arrival in trip.arrivals),
                *(other.at for other in trip.stops),
                *([trip.unloading.at] if trip.unloading is not None else []),
            ]
        )
        for stop in trip.stops:
            if stop.at < loaded_at:
                continue
            ended_at = stop.ended_at or next((at for at in later if at > stop.at), None)
            if ended_at is None and now - stop.at < settings.stop_limit + settings.open_stop_grace:
                continue
            lasted = (ended_at or now) - stop.at
            if lasted < settings.stop_limit:
                continue
            still = " and still there" if ended_at is None else ""
            found.append(
                Violation(
                    kind=ViolationKind.UNLOADED_AT_UNREGISTERED_PLACE,
                    plate=trip.plate,
                    point=None,
                    facility=None,
                    at=stop.at,
                    details=(
                        f"stopped loaded for {_duration(lasted)} at {stop.lon:.6f}, {stop.lat:.6f}, "
                        f"outside every registered place{still}"
                    ),
                    dedup_key=f"unloaded_at_unregistered_place|{trip.plate}|{instant(stop.at)}",
                    trip_id=trip.id,
                )
            )
    return found


def check_trips(
    trips: Iterable[Trip],
    vehicles: Mapping[str, Vehicle],
    facilities: Mapping[str, Facility],
    *,
    now: datetime,
    settings: CheckSettings = DEFAULT_CHECKS,
) -> list[Violation]:
    """Every trip check, each violation once, in time order (then kind, then key), with the stream
    of the vehicle's load where the register knows the vehicle."""
    trips = list(trips)
    found = [
        *mixed_loads(trips, vehicles, facilities),
        *weight_mismatches(trips, settings),
        *unfinished_trips(trips, now, settings),
        *unregistered_unloadings(trips, now, settings),
    ]
    unique = {violation.dedup_key: violation for violation in reversed(found)}
    streamed = [
        replace(v, stream=vehicle.stream)
        if v.stream is None and v.plate is not None and (vehicle := vehicles.get(v.plate)) is not None
        else v
        for v in unique.values()
    ]
    return sorted(streamed, key=lambda v: (v.at, v.kind, v.dedup_key))
