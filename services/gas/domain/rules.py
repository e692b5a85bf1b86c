"""The fill check and the safety dates of LPG steel cylinders and stoves.

A cylinder is inspected every 4 years and lasts 8 years from manufacture; a passed inspection gives
it 4 more years from that inspection, never past 12 years from manufacture. A stove may not be used
more than 8 years from sale. Every period runs [start, anniversary): the anniversary is the first
day refused.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from contract.gas import RefusalReason
from services.gas.domain.lifecycle import CylinderStatus

INSPECTION_INTERVAL_YEARS: Final = 4
DESIGN_LIFE_YEARS: Final = 8
EXTENSION_YEARS: Final = 4
MAXIMUM_LIFE_YEARS: Final = 12
STOVE_LIFE_YEARS: Final = 8

EARTH_RADIUS_KM: Final = 6371.0088  # the IUGG mean radius
SAME_PLACE_M: Final = 50.0  # two scans this close are one place, whatever the GPS jitter

Point = tuple[float, float]  # (lon, lat), WGS84, GeoJSON order


def add_years(day: date, years: int) -> date:
    """The same day ``years`` later; 29 February becomes 28 February in a year that has none."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later, clamped to the end of a shorter month."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def inspection_due(manufactured_on: date, last_passed_inspection_on: date | None) -> date:
    """The first day the cylinder is overdue for inspection."""
    return add_years(last_passed_inspection_on or manufactured_on, INSPECTION_INTERVAL_YEARS)


def end_of_life(manufactured_on: date, last_passed_inspection_on: date | None) -> date:
    """The first day the cylinder is past its service life."""
    life = add_years(manufactured_on, DESIGN_LIFE_YEARS)
    if last_passed_inspection_on is not None:
        life = max(life, add_years(last_passed_inspection_on, EXTENSION_YEARS))
    return min(life, add_years(manufactured_on, MAXIMUM_LIFE_YEARS))


@dataclass(frozen=True)
class CylinderFacts:
    """What the registry knows of a cylinder, as the fill check needs it."""

    code: str
    status: CylinderStatus
    owner_enterprise: str
    manufactured_on: date
    last_passed_inspection_on: date | None
    tare_kg: float | None


@dataclass(frozen=True)
class StationFacts:
    code: str
    enterprise: str
    licence_valid_until: date | None  # valid through this day
    locked: bool  # the regulator locked the station's scales
    entrusted_by: frozenset[str] = frozenset()  # enterprises whose cylinders this station may fill


@dataclass(frozen=True)
class Observations:
    """What the scale or its operator saw on the cylinder before filling."""

    modified: bool = False
    wrong_marking: bool = False
    damaged: bool = False
    no_residual_pressure: bool = False


R = RefusalReason
S = CylinderStatus

# Only a cylinder in stock or returned empty may be filled: the statuses the fill scan starts from.
STATUS_REFUSALS: Final[dict[CylinderStatus, RefusalReason]] = {
    S.VOID: R.CODE_VOID,
    S.SCRAPPED: R.SCRAPPED,
    S.REPORTED_LOST: R.REPORTED_LOST,
    # No empty return since the last fill.
    S.FILLED: R.ALREADY_FILLED,
    S.IN_TRANSIT: R.ALREADY_FILLED,
    S.AT_USER: R.ALREADY_FILLED,
    S.IN_INSPECTION: R.IN_INSPECTION,
}


def fill_refusals(
    cylinder: CylinderFacts | None,
    station: StationFacts,
    today: date,
    observed: Observations = Observations(),
) -> list[RefusalReason]:
    """Every reason the station must refuse to fill this cylinder today; empty means fill.

    The reasons come once each, in ``RefusalReason``'s order. An unregistered cylinder (None) has
    no registry facts to check, but what was seen on it and the station's own reasons still count.
    """
    found: set[RefusalReason] = set()
    if cylinder is None:
        found.add(R.UNREGISTERED)
    else:
        found.update(_cylinder_refusals(cylinder, station, today))
    found.update(_observed_refusals(observed))
    if station.locked:
        found.add(R.STATION_LOCKED)
    if station.licence_valid_until is None or today > station.licence_valid_until:
        found.add(R.LICENCE_EXPIRED)
    return [reason for reason in RefusalReason if reason in found]


def _cylinder_refusals(cylinder: CylinderFacts, station: StationFacts, today: date) -> set[RefusalReason]:
    found: set[RefusalReason] = set()
    if (by_status := STATUS_REFUSALS.get(cylinder.status)) is not None:
        found.add(by_status)
    if today >= inspection_due(cylinder.manufactured_on, cylinder.last_passed_inspection_on):
        found.add(R.INSPECTION_OVERDUE)
    if today >= end_of_life(cylinder.manufactured_on, cylinder.last_passed_inspection_on):
        found.add(R.PAST_SERVICE_LIFE)
    owner = cylinder.owner_enterprise
    if owner != station.enterprise and owner not in station.entrusted_by:
        found.add(R.NOT_OWNED_BY_FILLER)
    if cylinder.tare_kg is None:
        found.add(R.UNKNOWN_TARE)
    return found


def _observed_refusals(observed: Observations) -> set[RefusalReason]:
    seen = {
        R.MODIFIED: observed.modified,
        R.WRONG_MARKING: observed.wrong_marking,
        R.DAMAGED: observed.damaged,
        R.NO_RESIDUAL_PRESSURE: observed.no_residual_pressure,
    }
    return {reason for reason, present in seen.items() if present}


def stove_life_ends(sold_on: date) -> date:
    """The first day the stove may no longer be used."""
    return add_years(sold_on, STOVE_LIFE_YEARS)


def stove_past_life(sold_on: date, today: date) -> bool:
    return today >= stove_life_ends(sold_on)


def near_end_of_life(end: date, today: date, months: int = 6) -> bool:
    """Still in service, but its end falls within the next ``months`` calendar months: time to warn."""
    return today < end <= add_months(today, months)


def distance_m(first: Point, second: Point) -> float:
    """Great-circle distance in metres (haversine on a sphere: within ~0.3 % of the ellipsoid)."""
    (lon1, lat1), (lon2, lat2) = first, second
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2.0
    half_dlambda = math.radians(lon2 - lon1) / 2.0
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2.0 * EARTH_RADIUS_KM * 1000.0 * math.asin(min(1.0, math.sqrt(a)))


def implausible_travel(
    first: Point,
    first_at: datetime,
    second: Point,
    second_at: datetime,
    *,
    max_speed_kmh: float = 120.0,
) -> bool:
    """Could one cylinder not have been scanned at both places? True when it would have had to move
    faster than ``max_speed_kmh``: a cloned code, or a scan recorded without the cylinder."""
    metres = distance_m(first, second)
    if metres <= SAME_PLACE_M:
        return False
    hours = abs((second_at - first_at).total_seconds()) / 3600.0
    if hours == 0:
        return True
    return metres / 1000.0 / hours > max_speed_kmh
