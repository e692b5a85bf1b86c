"""A vehicle's positions turned into the movements the trips are built from: left or back at a
depot, arrived at a facility, stopped outside every registered place.

Places are shapely geometries in the positions' lon/lat, a boundary counting as inside. A movement is
dated by the first position that shows it (the first outside the depot, the first inside the
facility); the first position of a vehicle only says where it is, not what it crossed to get there.

A track read in pieces derives the same movements as the whole of it: ``derive_track`` takes each
vehicle's ``TrackState`` at the end of the piece before (where its last position was, the stop
under way) and gives it back at the end of this one. Without a state, a piece must start at a
*resume point*: a position that ends any stop (moving, or inside a place), since what follows one
does not depend on what came before it; ``is_resume_point`` says which positions are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import Point, Polygon
from shapely.geometry.base import BaseGeometry

from services.waste.domain.chain import (
    DepotDeparture,
    DepotReturn,
    FacilityArrival,
    Movement,
    Stop,
)

__all__ = [
    "DerivedTrack",
    "Places",
    "Position",
    "TrackState",
    "circle",
    "derive_movements",
    "derive_track",
    "resume_points",
]

_NOTHING: frozenset[str] = frozenset()
# Metres in a degree of latitude, and of longitude at the equator (WGS 84, to 0.1 %: a geofence's
# radius is not a survey).
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0


def circle(lon: float, lat: float, radius_m: float) -> Polygon:
    """The place within ``radius_m`` metres of a lon/lat point, in lon/lat degrees: an ellipse there,
    since a degree of longitude shortens away from the equator."""
    if not (radius_m > 0 and math.isfinite(radius_m)):
        raise ValueError(f"a radius is a positive number of metres, not {radius_m}")
    if not (-180 <= lon <= 180 and -85 <= lat <= 85):
        raise ValueError(f"({lon}, {lat}) is not a lon/lat a circle can be drawn at")
    disc = Point(lon, lat).buffer(radius_m / _M_PER_DEG_LAT, quad_segs=8)
    stretch = _M_PER_DEG_LAT / (_M_PER_DEG_LON * math.cos(math.radians(lat)))
    shape: Polygon = affinity.scale(disc, xfact=stretch, yfact=1.0, origin=(lon, lat))
    return shape


@dataclass(frozen=True, slots=True)
class Position:
    plate: str
    at: datetime
    lon: float
    lat: float
    speed_kmh: float

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("a position's time must carry its time zone")


@dataclass(frozen=True, slots=True)
class _Where:
    depots: frozenset[str]
    facilities: frozenset[str]
    registered: bool  # inside any registered place: a depot, a facility, a collection point, …


class Places:
    """The register's places as geometry, indexed once per change of the register.

    ``others`` are the places where a stop is expected and no movement is recorded: collection
    points (as small polygons or buffers), car parks, workshops.
    """

    def __init__(
        self,
        depots: Mapping[str, BaseGeometry],
        facilities: Mapping[str, BaseGeometry],
        others: Mapping[str, BaseGeometry] | None = None,
    ) -> None:
        named = [
            *((0, code, shape) for code, shape in depots.items()),
            *((1, code, shape) for code, shape in facilities.items()),
            *((2, code, shape) for code, shape in (others or {}).items()),
        ]
        for _, code, shape in named:
            if shape.is_empty or not shape.is_valid:
                raise ValueError(f"place {code}: not a valid geometry ({shapely.is_valid_reason(shape)})")
        self._kinds = [kind for kind, _, _ in named]
        self._codes = [code for _, code, _ in named]
        self._tree = shapely.STRtree([shape for _, _, shape in named])

    def where(self, lons: Sequence[float], lats: Sequence[float]) -> list[_Where]:
        """For each position, the depots and facilities it is in and whether it is in any place."""
        found: list[_Where] = [_Where(_NOTHING, _NOTHING, False)] * len(lons)
        if not len(lons) or not self._codes:
            return found
        points = shapely.points(np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64))
        inside: dict[int, list[int]] = defaultdict(list)
        for at, place in zip(*self._tree.query(points, predicate="intersects").tolist(), strict=True):
            inside[at].append(place)
        for at, places in inside.items():
            found[at] = _Where(
                frozenset(self._codes[p] for p in places if self._kinds[p] == 0),
                frozenset(self._codes[p] for p in places if self._kinds[p] == 1),
                True,
            )
        return found


def _stop(first: Position, last: Position, ended_at: datetime | None, min_stop: timedelta) -> list[Stop]:
    if last.at - first.at < min_stop:
        return []
    return [Stop(first.plate, first.at, ended_at, first.lon, first.lat)]


@dataclass(frozen=True, slots=True)
class TrackState:
    """Where a vehicle's derivation stands after its last position: the places that position was in,
    and the stop under way (its first and its latest position), if any."""

    at: datetime
    depots: frozenset[str]
    facilities: frozenset[str]
    registered: bool
    stop: tuple[Position, Position] | None = None

    def stop_reported(self, min_stop: timedelta) -> bool:
        """Whether the stop under way was long enough to be reported (without its end)."""
        return self.stop is not None and self.stop[1].at - self.stop[0].at >= min_stop


def _vehicle_movements(
    positions: Sequence[Position],
    places: Sequence[_Where],
    stop_speed_kmh: float,
    min_stop: timedelta,
    state: TrackState | None,
) -> tuple[list[Movement], TrackState | None]:
    found: list[Movement] = []
    before: _Where | None = None
    still: tuple[Position, Position] | None = None  # the first and the latest position of a stop
    if state is not None:
        before = _Where(state.depots, state.facilities, state.registered)
        still = state.stop
    last: Position | None = None
    for position, where in zip(positions, places, strict=True):
        plate, at = position.plate, position.at
        if before is not None:
            found += [DepotDeparture(plate, d, at) for d in sorted(before.depots - where.depots)]
            found += [DepotReturn(plate, d, at) for d in sorted(where.depots - before.depots)]
            found += [FacilityArrival(plate, f, at) for f in sorted(where.facilities - before.facilities)]
        before, last = where, position
        if position.speed_kmh < stop_speed_kmh and not where.registered:
            still = (still[0] if still is not None else position, position)
        elif still is not None:
            found += _stop(*still, still[1].at, min_stop)
            still = None
    if still is not None:
        found += _stop(*still, None, min_stop)  # still standing there at the last position
    if last is None or before is None:
        return found, state
    return found, TrackState(last.at, before.depots, before.facilities, before.registered, still)


@dataclass(frozen=True, slots=True)
class DerivedTrack:
    movements: list[Movement]
    # Each vehicle's state after its last position: where the next piece of its track goes on.
    states: dict[str, TrackState]


def derive_movements(
    positions: Iterable[Position],
    places: Places,
    *,
    stop_speed_kmh: float = 3.0,
    min_stop: timedelta = timedelta(minutes=2),
) -> list[Movement]:
    """Every vehicle's movements from its positions, in any order and with duplicates (see
    ``derive_track``)."""
    return derive_track(positions, places, stop_speed_kmh=stop_speed_kmh, min_stop=min_stop).movements


def derive_track(
    positions: Iterable[Position],
    places: Places,
    *,
    states: Mapping[str, TrackState] | None = None,
    stop_speed_kmh: float = 3.0,
    min_stop: timedelta = timedelta(minutes=2),
) -> DerivedTrack:
    """Every vehicle's movements from its positions, in any order and with duplicates, going on from
    its state in ``states`` (positions not after the state's are skipped), and each vehicle's state
    after its last position.

    A stop is a run of positions slower than ``stop_speed_kmh`` outside every place, from its first
    position to its last; one shorter than ``min_stop`` (a red light, a jam) is not reported. A
    stop under way at the last position is reported without an end. A position without a fix (not
    a finite lon/lat) says nothing of where the vehicle is, and is skipped.
    """
    if not (stop_speed_kmh >= 0 and math.isfinite(stop_speed_kmh)):
        raise ValueError(f"a stop speed is a non-negative number of km/h, not {stop_speed_kmh}")
    if min_stop < timedelta(0):
        raise ValueError("min_stop cannot be negative")
    states = states or {}
    kept: dict[tuple[str, datetime], Position] = {}
    for position in sorted(positions, key=lambda p: (p.plate, p.at, p.lon, p.lat, p.speed_kmh)):
        state = states.get(position.plate)
        if state is not None and position.at <= state.at:
            continue
        if math.isfinite(position.lon) and math.isfinite(position.lat):
            kept.setdefault((position.plate, position.at), position)
    by_plate: dict[str, list[Position]] = defaultdict(list)
    for position in kept.values():
        by_plate[position.plate].append(position)
    found: list[Movement] = []
    after: dict[str, TrackState] = dict(states)  # a vehicle with nothing new keeps its state
    for plate in sorted(by_plate):
        track = by_plate[plate]
        where = places.where([p.lon for p in track], [p.lat for p in track])
        movements, state = _vehicle_movements(track, where, stop_speed_kmh, min_stop, states.get(plate))
        found += movements
        if state is not None:
            after[plate] = state
    return DerivedTrack(found, after)


def resume_points(
    positions: Sequence[Position], places: Places, *, stop_speed_kmh: float = 3.0
) -> list[bool]:
    """For each position of one vehicle's track, whether it ends any stop (moving, or inside a
    place): a derivation may start there as if it had read everything before it."""
    where = places.where([p.lon for p in positions], [p.lat for p in positions])
    return [
        math.isfinite(p.lon) and math.isfinite(p.lat) and (p.speed_kmh >= stop_speed_kmh or w.registered)
        for p, w in zip(positions, where, strict=True)
    ]
