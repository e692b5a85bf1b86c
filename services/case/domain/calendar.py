"""Working-time deadlines on the Chinese work calendar.

Digital city management gives each stage of a case a time limit: most in working hours or working
days, urgent matters in natural (elapsed) hours. Working time is not "Monday to Friday": every year
the State Council General Office publishes which days are public holidays (法定节假日, rest even on a
weekday) and which weekend days are make-up working days (调休上班). A deadline computed on plain
weekdays would be wrong around every long holiday, which is exactly when overdue cases pile up.

The yearly schedules live as JSON files in ``services/case/data/calendars/<year>.json`` (shipped as
package data) so that a new year is a data change, not a code change; ``calendar_from_documents``
accepts the same documents already parsed, so they can later be stored and edited in the database.

Everything is computed in the city's wall-clock time (Asia/Shanghai): office hours are local, and a
case reported at 23:30 UTC is reported in the morning in the city. Shanghai has no daylight saving
time, so local wall-clock spans equal elapsed time. The module is pure: no I/O besides reading its
own data files in ``load_calendar``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from citygrid.clock import CITY_TIMEZONE

DEFAULT_OFFICE_HOURS: tuple[tuple[time, time], ...] = ((time(9), time(12)), (time(13, 30), time(18)))
"""09:00–12:00 and 13:30–18:00: 7.5 working hours a day, the usual government office day."""

DEFAULT_CALENDAR_DIRECTORY = Path(__file__).resolve().parents[1] / "data" / "calendars"

_ONE_DAY = timedelta(days=1)
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DOCUMENT_KEYS = frozenset({"year", "source", "holidays", "makeup_workdays"})
_HOLIDAY_KEYS = frozenset({"name", "dates"})
_CALENDAR_FILE = re.compile(r"(\d{4})\.json")


class LimitUnit(StrEnum):
    """How a stage's time limit is counted."""

    WORKING_HOURS = "working_hours"
    """Office time on workdays only."""
    WORKING_DAYS = "working_days"
    """Whole workdays: the same local wall-clock time N workdays later."""
    NATURAL_HOURS = "natural_hours"
    """Elapsed time, for urgent matters that do not wait for Monday."""


@dataclass(frozen=True)
class TimeLimit:
    """A stage's time limit, e.g. ``TimeLimit(2, LimitUnit.WORKING_HOURS)``."""

    amount: float
    unit: LimitUnit

    def __post_init__(self) -> None:
        # A zero or negative limit would make a case overdue the moment it enters the stage, and NaN
        # or infinity would never produce a deadline: all of them are configuration mistakes.
        if isinstance(self.amount, bool) or not isinstance(self.amount, int | float):
            raise ValueError(f"time limit amount must be a number, got {self.amount!r}")
        if not math.isfinite(self.amount) or self.amount <= 0:
            raise ValueError(f"time limit amount must be a finite number > 0, got {self.amount!r}")
        # Accept the plain string too ("working_days" from JSON), but nothing outside the enum.
        object.__setattr__(self, "unit", LimitUnit(self.unit))


@dataclass(frozen=True)
class WorkCalendar:
    """Which days are worked and which hours of them are office time.

    Days outside ``years`` (the years a published schedule was loaded for) fall back to the
    Monday–Friday rule; use :func:`is_configured` to tell whether a day's answer is authoritative.
    Every office day has the same ``office_hours`` periods, local time, sorted and non-overlapping.
    """

    holidays: frozenset[date]
    makeup_workdays: frozenset[date]
    office_hours: tuple[tuple[time, time], ...] = DEFAULT_OFFICE_HOURS
    years: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        both = self.holidays & self.makeup_workdays
        if both:
            listed = ", ".join(sorted(day.isoformat() for day in both))
            raise ValueError(f"dates listed as both holiday and make-up workday: {listed}")
        if not self.office_hours:
            raise ValueError("office_hours must contain at least one period")
        previous_end: time | None = None
        for start, end in self.office_hours:
            if start.tzinfo is not None or end.tzinfo is not None:
                raise ValueError("office hours are local wall-clock times and must not carry a tzinfo")
            if start >= end:
                raise ValueError(f"office period {start}–{end} must start before it ends")
            if previous_end is not None and start < previous_end:
                raise ValueError("office periods must be sorted and must not overlap")
            previous_end = end

    @property
    def working_day_length(self) -> timedelta:
        """Office time in one workday (7.5 h by default); the size of one working day."""
        return sum(
            (_on(date(2000, 1, 1), end) - _on(date(2000, 1, 1), start) for start, end in self.office_hours),
            timedelta(),
        )

    def is_workday(self, day: date) -> bool:
        """Whether ``day`` is worked: make-up days always, holidays never, otherwise Monday–Friday."""
        if day in self.makeup_workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def next_working_moment(self, moment: datetime) -> datetime:
        """``moment`` itself if it is office time, else the start of the next office period.

        The end of a period is not office time (12:00 leads to 13:30, 18:00 to the next workday's
        09:00), so the answer is always a moment from which work can actually proceed.
        """
        local = _local(moment)
        day = local.date()
        while True:
            for start, end in self._periods(day):
                if local < end:
                    return max(local, start)
            day += _ONE_DAY

    def add(self, start: datetime, limit: TimeLimit) -> datetime:
        """The deadline of a stage that starts at ``start`` and has ``limit``, in Asia/Shanghai."""
        local = _local(start)
        if limit.unit is LimitUnit.NATURAL_HOURS:
            # Elapsed time: add in UTC so the answer would stay right even in a zone with DST.
            return (local.astimezone(UTC) + timedelta(hours=limit.amount)).astimezone(CITY_TIMEZONE)
        if limit.unit is LimitUnit.WORKING_HOURS:
            return self._add_working_time(local, timedelta(hours=limit.amount))
        return self._add_working_days(local, limit.amount)

    def working_seconds_between(self, start: datetime, end: datetime) -> float:
        """Office time between two moments, in seconds; 0 if ``end`` is not after ``start``.

        The inverse of :meth:`add` for working limits: from ``start`` to ``add(start, limit)``
        there are exactly ``limit`` working seconds (to the microsecond), which is what lets a
        supervisor's "time used / time allowed" be computed with the same rules as the deadline.
        """
        local_start, local_end = _local(start), _local(end)
        if local_end <= local_start:
            return 0.0
        total = timedelta()
        day = local_start.date()
        while day <= local_end.date():
            for period_start, period_end in self._periods(day):
                overlap = min(period_end, local_end) - max(period_start, local_start)
                if overlap > timedelta():
                    total += overlap
            day += _ONE_DAY
        return total.total_seconds()

    def _periods(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_workday(day):
            return []
        return [(_on(day, start), _on(day, end)) for start, end in self.office_hours]

    def _add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        # Walk period by period (never minute by minute). A deadline that fills a period exactly
        # stays at that period's end: 2 working hours from 16:00 is 18:00 the same day.
        remaining = amount
        day = start.date()
        while True:
            for period_start, period_end in self._periods(day):
                begin = max(period_start, start)
                if begin >= period_end:
                    continue
                available = period_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            day += _ONE_DAY

    def _add_working_days(self, start: datetime, amount: float) -> datetime:
        # Counting starts from the next moment work can happen: a case reported on Friday night
        # with a 1-working-day limit is due on Tuesday morning, not on Monday night.
        begin = self.next_working_moment(start)
        whole = math.floor(amount)
        day = begin.date()
        counted = 0
        while counted < whole:
            day += _ONE_DAY
            if self.is_workday(day):
                counted += 1
        # Same wall-clock time on that workday: still office time, as every workday has the same
        # office hours. The fraction of a day is that fraction of a working day's office time.
        deadline = _on(day, begin.time())
        fraction = amount - whole
        if fraction == 0:
            return deadline
        return self._add_working_time(deadline, self.working_day_length * fraction)


def is_configured(calendar: WorkCalendar, day: date) -> bool:
    """Whether the calendar holds the published schedule for ``day``'s year.

    Outside those years :meth:`WorkCalendar.is_workday` can only apply the weekday rule, which is
    wrong around every public holiday; callers can warn or refuse instead of guessing silently.
    """
    return day.year in calendar.years


def calendar_from_documents(
    documents: Iterable[Mapping[str, Any]],
    *,
    office_hours: tuple[tuple[time, time], ...] = DEFAULT_OFFICE_HOURS,
) -> WorkCalendar:
    """Merge yearly schedule documents (the JSON format of the data files, already parsed).

    Documents are checked strictly, because a typo in a holiday list silently moves deadlines:
    unknown keys, malformed dates, dates outside the document's year, a date listed twice or as
    both holiday and make-up day, a make-up "workday" that is already a weekday, and two documents
    for the same year all raise ``ValueError``.
    """
    holidays: set[date] = set()
    makeup_workdays: set[date] = set()
    years: set[int] = set()
    for document in documents:
        year, year_holidays, year_makeups = _parse_document(document)
        if year in years:
            raise ValueError(f"calendar for {year} given more than once")
        years.add(year)
        holidays |= year_holidays
        makeup_workdays |= year_makeups
    return WorkCalendar(
        holidays=frozenset(holidays),
        makeup_workdays=frozenset(makeup_workdays),
        office_hours=office_hours,
        years=frozenset(years),
    )


def load_calendar(*, years: Iterable[int] | None = None, directory: Path | None = None) -> WorkCalendar:
    """Read ``<year>.json`` schedules from ``directory`` (default: the shipped package data).

    With ``years=None`` every ``<year>.json`` in the directory is loaded. A requested year without
    a file, or a directory without any, raises ``FileNotFoundError``: a calendar silently missing
    its holidays would compute wrong deadlines rather than fail.
    """
    folder = DEFAULT_CALENDAR_DIRECTORY if directory is None else directory
    if years is None:
        paths = sorted(path for path in folder.glob("*.json") if _CALENDAR_FILE.fullmatch(path.name))
        if not paths:
            raise FileNotFoundError(f"no <year>.json calendar files in {folder}")
    else:
        paths = [folder / f"{year}.json" for year in sorted(set(years))]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"no calendar file {path.name} in {folder}")
    documents: list[Mapping[str, Any]] = []
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from error
        if not isinstance(document, Mapping):
            raise ValueError(f"{path}: a calendar document must be a JSON object")
        if document.get("year") != int(path.stem):
            raise ValueError(
                f"{path}: file name says {path.stem} but the document says {document.get('year')!r}"
            )
        documents.append(document)
    return calendar_from_documents(documents)


def _parse_document(document: Mapping[str, Any]) -> tuple[int, set[date], set[date]]:
    if not isinstance(document, Mapping):
        raise ValueError(f"a calendar document must be a mapping, got {type(document).__name__}")
    unknown = set(document) - _DOCUMENT_KEYS
    if unknown:
        raise ValueError(f"unknown calendar document keys: {', '.join(sorted(map(str, unknown)))}")
    year = document.get("year")
    if isinstance(year, bool) or not isinstance(year, int) or not 1970 <= year < 2200:
        raise ValueError(f"calendar 'year' must be an integer year, got {year!r}")
    where = f"calendar {year}"
    source = document.get("source")
    if source is not None and not isinstance(source, str):
        raise ValueError(f"{where}: 'source' must be a string")
    for key in ("holidays", "makeup_workdays"):
        if key not in document:
            raise ValueError(f"{where}: missing '{key}'")
        if not isinstance(document[key], list):
            raise ValueError(f"{where}: '{key}' must be a list")

    holidays: set[date] = set()
    for entry in document["holidays"]:
        if not isinstance(entry, Mapping) or set(entry) != _HOLIDAY_KEYS:
            raise ValueError(f"{where}: each holiday must be an object with exactly 'name' and 'dates'")
        name, dates = entry["name"], entry["dates"]
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: holiday name must be a non-empty string, got {name!r}")
        if not isinstance(dates, list) or not dates:
            raise ValueError(f"{where}: holiday {name} must list at least one date")
        for text in dates:
            day = _parse_day(text, year, f"{where}, holiday {name}")
            if day in holidays:
                raise ValueError(f"{where}: holiday date {day} is listed more than once")
            holidays.add(day)

    makeup_workdays: set[date] = set()
    for text in document["makeup_workdays"]:
        day = _parse_day(text, year, f"{where}, make-up workdays")
        if day in makeup_workdays:
            raise ValueError(f"{where}: make-up workday {day} is listed more than once")
        if day.weekday() < 5:
            raise ValueError(f"{where}: make-up workday {day} is a weekday, which is worked anyway")
        if day in holidays:
            raise ValueError(f"{where}: {day} is listed both as a holiday and as a make-up workday")
        makeup_workdays.add(day)
    return year, holidays, makeup_workdays


def _parse_day(text: object, year: int, where: str) -> date:
    # Only YYYY-MM-DD: date.fromisoformat alone would also take "20260101" or "2026-W01-4".
    if not isinstance(text, str) or not _ISO_DAY.fullmatch(text):
        raise ValueError(f"{where}: malformed date {text!r}, expected YYYY-MM-DD")
    try:
        day = date.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"{where}: malformed date {text!r}: {error}") from error
    if day.year != year:
        raise ValueError(f"{where}: date {day} is outside the document's year {year}")
    return day


def _local(moment: datetime) -> datetime:
    # A naive datetime is ambiguous (UTC from the database? local from a form?) and a guess would
    # shift every deadline by eight hours, so it is refused rather than assumed.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(CITY_TIMEZONE)


def _on(day: date, wall_clock: time) -> datetime:
    return datetime.combine(day, wall_clock, tzinfo=CITY_TIMEZONE)
