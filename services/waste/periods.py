"""The periods the waste service's reads take: refused with one code wherever they are wrong."""

from __future__ import annotations

from datetime import datetime, timedelta

from citygrid.clock import EARLIEST, LATEST
from citygrid.errors import InvalidInput


class InvalidPeriod(InvalidInput):
    code = "waste.invalid_period"
    title = "Invalid period"


def within_records(**bounds: datetime | None) -> None:
    """Refuse a bound outside the times records keep: one far outside (year 1 at +14:00) would
    overflow in the database driver and be a 500."""
    for name, moment in bounds.items():
        if moment is not None and not EARLIEST <= moment <= LATEST:
            raise InvalidPeriod(f"{name} must be between {EARLIEST.date()} and {LATEST.date()}")


def period(since: datetime, until: datetime, longest: timedelta) -> None:
    """Refuse a period that is empty, longer than ``longest`` or outside the times records keep."""
    if not (EARLIEST <= since < until <= LATEST and until - since <= longest):
        raise InvalidPeriod(f"until must be after since, and the period at most {longest.days} days")
