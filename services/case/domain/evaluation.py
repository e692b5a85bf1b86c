"""综合评价: the period an evaluation covers, how cases are grouped, and the rates from the counts.

Pure: which cases each count takes is defined in ``services/case/evaluation.py`` (SQL) and
``docs/evaluation.md``; here only the arithmetic that turns counts into rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from citygrid.clock import CITY_TIMEZONE
from citygrid.errors import InvalidInput

# A year (a leap year's 366 days) is the unit cities evaluate in (年度考核). Its cost is bounded
# elsewhere, not by a shorter period: the query reads the period through range indexes, runs on the
# analytics pool (a few connections per replica) and under a statement limit below the gateway's
# timeout (docs/database.md); a year of a million cases takes about 1.5 s (docs/evaluation.md).
MAX_PERIOD = timedelta(days=366)


class Grouping(StrEnum):
    DISTRICT = "district"
    STREET = "street"
    UNIT = "unit"
    CATEGORY = "category"


class InvalidPeriod(InvalidInput):
    code = "evaluation.invalid_period"
    title = "Invalid period"


@dataclass(frozen=True)
class Period:
    """``[start, end)``: a case counts for the period when its step happened at or after ``start``
    and before ``end``."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Period:
        if start >= end:
            raise InvalidPeriod("'from' must be before 'to'")
        if end - start > MAX_PERIOD:
            raise InvalidPeriod(f"a period spans at most {MAX_PERIOD.days} days; evaluate a year at a time")
        return cls(start, end)

    @classmethod
    def city_day(cls, moment: datetime) -> Period:
        """The local (Asia/Shanghai) calendar day that contains ``moment``."""
        local = moment.astimezone(CITY_TIMEZONE)
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(start, start + timedelta(days=1))


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or None when nothing was due (a rate of nothing is not 0% or 100%)."""
    return part / whole if whole else None


@dataclass(frozen=True)
class Counts:
    """What one group of cases did in a period (see docs/evaluation.md for each definition)."""

    reported: int
    registered: int
    closed: int
    due_to_handle: int
    handled: int
    handled_on_time: int
    overdue_pending: int
    extended: int
    due_to_close: int
    closed_of_due: int
    reworked: int
    mean_handling_seconds: float | None
    median_handling_seconds: float | None

    def as_json(self) -> dict[str, int | float | None]:
        """The counts as a JSON object (a stored snapshot)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counts:
        """Counts from ``as_json``'s object; a figure the snapshot lacks (an older version) is 0."""
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        for name, value in values.items():
            if value is None and not name.endswith("_seconds"):
                values[name] = 0
        return cls(**values)

    @property
    def handling_rate(self) -> float | None:
        return ratio(self.handled, self.due_to_handle)

    @property
    def on_time_handling_rate(self) -> float | None:
        return ratio(self.handled_on_time, self.due_to_handle)

    @property
    def overdue_pending_rate(self) -> float | None:
        return ratio(self.overdue_pending, self.due_to_handle)

    @property
    def extension_rate(self) -> float | None:
        return ratio(self.extended, self.due_to_handle)

    @property
    def closure_rate(self) -> float | None:
        return ratio(self.closed_of_due, self.due_to_close)

    @property
    def rework_rate(self) -> float | None:
        return ratio(self.reworked, self.due_to_close)

    @property
    def mean_handling_hours(self) -> float | None:
        return None if self.mean_handling_seconds is None else self.mean_handling_seconds / 3600

    @property
    def median_handling_hours(self) -> float | None:
        return None if self.median_handling_seconds is None else self.median_handling_seconds / 3600


@dataclass(frozen=True)
class GroupFigures:
    key: str | None  # the district, street, unit or category code; None: cases without one
    counts: Counts


@dataclass(frozen=True)
class Evaluation:
    period: Period
    by: Grouping
    total: Counts
    groups: list[GroupFigures]
