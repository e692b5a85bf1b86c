"""A reported position checked and turned into a row of a service's positions table: the same rules
whether it came over a terminal's JT/T 808 connection or from a vendor's platform over HTTP, in
every service that keeps a fleet's positions. Refusals carry kit codes (``fleet.…``)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import NamedTuple

# Where a fix in mainland China can be (a wider box than the country, narrower than the globe): a
# terminal without a fix sends zeros, and some send latitude and longitude swapped.
LON_RANGE = (73.0, 136.0)
LAT_RANGE = (3.0, 54.0)
# A terminal's clock may run this far ahead of ours.
FUTURE_TOLERANCE = timedelta(minutes=10)
LOAD_CODES = {"empty": 0, "half": 1, "full": 3}
# Altitudes a road can have (m); outside it a terminal means "not known" (0xFFFF, say).
ALTITUDE_RANGE = (-500, 9_000)


def known_altitude(metres: int) -> int | None:
    return metres if ALTITUDE_RANGE[0] <= metres <= ALTITUDE_RANGE[1] else None


class Report(NamedTuple):
    """One reported position. A tuple whose first fields are a row's, in the table's column order,
    so a row is a slice of it and three values: this runs for every position."""

    plate: str
    at: datetime
    lon: float
    lat: float
    speed_kmh: float
    direction: int
    altitude_m: int | None
    alarm: int = 0
    status: int = 0
    load: int | None = None
    mileage_km: float | None = None
    fixed: bool = True


def refusal(report: Report, *, now: datetime, earliest: datetime) -> tuple[str, str] | None:
    """Why the report cannot be stored (problem code, detail), or None."""
    if not report.fixed or not (math.isfinite(report.lon) and math.isfinite(report.lat)):
        return "fleet.position_not_fixed", "the terminal had no satellite fix"
    if not (LON_RANGE[0] <= report.lon <= LON_RANGE[1] and LAT_RANGE[0] <= report.lat <= LAT_RANGE[1]):
        return "fleet.position_out_of_range", f"({report.lon}, {report.lat}) is not a place in China"
    if not 0 <= report.direction <= 359 or not 0 <= report.speed_kmh <= 250:
        return "fleet.position_invalid", "direction or speed is outside what a truck can report"
    if report.at < earliest:
        return (
            "fleet.position_too_old",
            f"{report.at.isoformat()} is before {earliest.isoformat()}, the oldest kept",
        )
    if report.at > now + FUTURE_TOLERANCE:
        return "fleet.position_in_future", f"{report.at.isoformat()} is ahead of the platform's clock"
    return None


ROW_ORDER = (
    "plate", "at", "lon", "lat", "speed_kmh", "direction", "altitude_m", "alarm", "status", "load",
    "mileage_km", "source", "blind_area", "received_at",
)  # fmt: skip
REPORT_COLUMNS = 11
# A row of a positions table is a report's first REPORT_COLUMNS values, then source, blind_area and
# received_at: a service's table has these columns in this order (``check_columns``).
if Report._fields[:REPORT_COLUMNS] != ROW_ORDER[:REPORT_COLUMNS]:
    raise RuntimeError("a report's first fields must be a row's, in the row's order")


def check_columns(columns: tuple[str, ...]) -> None:
    """Refuse, at import, a positions table whose columns are not ``ROW_ORDER``: rows are built as
    tuples in that order and copied without names."""
    if columns != ROW_ORDER:
        raise RuntimeError(f"a positions table must have the columns {ROW_ORDER}, not {columns}")


def acceptable(report: Report, *, earliest: datetime, latest: datetime) -> bool:
    """The common case of :func:`refusal` in one expression (NaN compares false, so it is refused
    there with its reason); ``latest`` is now plus the tolerance."""
    return (
        report.fixed
        and LON_RANGE[0] <= report.lon <= LON_RANGE[1]
        and LAT_RANGE[0] <= report.lat <= LAT_RANGE[1]
        and 0 <= report.direction <= 359
        and 0 <= report.speed_kmh <= 250
        and earliest <= report.at <= latest
    )
