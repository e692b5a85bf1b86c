"""Collection schedules: which points a route serves on which weekdays within which window, the
visits due, those missed and the day's coverage.

A window runs [start, end) in city time on the day it opens; one whose end is not after its start
crosses midnight and ends the next day, and belongs to the weekday it opens on (a Monday 22:00–06:00
round is Monday's, done by Tuesday 06:00). A point is visited when a bin of the route's stream is
lifted there within the window, by any vehicle: a substitute vehicle does the round as well as the
scheduled one.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from services.waste.domain.chain import CITY_TIMEZONE, Pickup, Stream, instant
from services.waste.domain.chain_checks import Violation, ViolationKind

__all__ = [
    "CollectionWindow",
    "Coverage",
    "Route",
    "Schedule",
    "ScheduledVisit",
    "collection_coverage",
    "coverage_visits",
    "missed_collections",
    "scheduled_visits",
]

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class CollectionWindow:
    """A daily window of city wall-clock time; ``end <= start`` crosses midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("a window's times are the city's wall-clock times, without a time zone")
        if self.start == self.end:
            # Empty or the whole day: ambiguous, so a schedule says which by its windows.
            raise ValueError(f"a window cannot start and end at {self.start:%H:%M}")

    @classmethod
    def parse(cls, text: str) -> CollectionWindow:
        """A window from ``"HH:MM-HH:MM"`` in city time; ``24:00`` is allowed as an end."""
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a window: write it as HH:MM-HH:MM, e.g. 05:00-08:00")
        start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
        if (end_h, end_m) == (24, 0):
            end_h = 0
        if not (0 <= start_h <= 23 and 0 <= end_h <= 23 and start_m <= 59 and end_m <= 59):
            raise ValueError(f"{text!r}: not times of day")
        return cls(time(start_h, start_m), time(end_h, end_m))

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def on(self, day: date) -> tuple[datetime, datetime]:
        """The window opening on the city date ``day``: its start (in) and end (out), city time."""
        opens = datetime.combine(day, self.start, tzinfo=CITY_TIMEZONE)
        closes_on = day + timedelta(days=1) if self.crosses_midnight else day
        return opens, datetime.combine(closes_on, self.end, tzinfo=CITY_TIMEZONE)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """The weekdays (ISO: 1 Monday … 7 Sunday) a route runs, in one window."""

    weekdays: frozenset[int]
    window: CollectionWindow

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(1, 8)):
            raise ValueError(f"weekdays are 1 (Monday) to 7 (Sunday), at least one: {sorted(self.weekdays)}")


@dataclass(frozen=True, slots=True)
class Route:
    """A vehicle's round of one stream's points, on its schedules."""

    code: str
    plate: str
    stream: Stream
    points: tuple[str, ...]
    schedules: tuple[Schedule, ...]
    # When the route took its present form (registered or last changed): a window that opened
    # before was not this route's to keep, and is not due.
    effective_from: datetime | None = None

    def __post_init__(self) -> None:
        twice = sorted({point for point in self.points if self.points.count(point) > 1})
        if twice:
            raise ValueError(f"route {self.code} lists {', '.join(twice)} more than once")


@dataclass(frozen=True, slots=True)
class ScheduledVisit:
    """One point due on one route in one window."""

    route: str
    plate: str
    stream: Stream
    point: str
    day: date  # the city date the window opens on
    opens_at: datetime
    closes_at: datetime


def scheduled_visits(routes: Iterable[Route], day: date) -> list[ScheduledVisit]:
    """The visits due in the windows that open on the city date ``day``."""
    due: list[ScheduledVisit] = []
    for route in routes:
        for schedule in route.schedules:
            if day.isoweekday() not in schedule.weekdays:
                continue
            opens, closes = schedule.window.on(day)
            if route.effective_from is not None and opens < route.effective_from:
                continue
            due += [
                ScheduledVisit(route.code, route.plate, route.stream, point, day, opens, closes)
                for point in route.points
            ]
    return due


class _Lifts:
    """Each (point, stream)'s lift times, sorted, to find one in a window by bisection."""

    def __init__(self, pickups: Iterable[Pickup]) -> None:
        times: dict[tuple[str, Stream], list[datetime]] = defaultdict(list)
        for pickup in pickups:
            times[(pickup.point, pickup.stream)].append(pickup.at)
        self._times = {key: sorted(found) for key, found in times.items()}

    def visited(self, visit: ScheduledVisit) -> bool:
        found: Sequence[datetime] = self._times.get((visit.point, visit.stream), ())
        at = bisect_left(found, visit.opens_at)
        return at < len(found) and found[at] < visit.closes_at


def _aware(moment: datetime, what: str) -> date:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry its time zone")
    return moment.astimezone(CITY_TIMEZONE).date()


def missed_collections(
    routes: Sequence[Route], pickups: Iterable[Pickup], *, since: datetime, now: datetime
) -> list[Violation]:
    """The scheduled visits whose window closed in (``since``, ``now``] without a visit, in time order.

    ``pickups`` must cover those windows. Run again over an overlapping span, a missed visit gets
    the same dedup key (route, point, window opening), so the service stores it once.
    """
    first, last = _aware(since, "since"), _aware(now, "now")
    lifts = _Lifts(pickups)
    found: list[Violation] = []
    # A window closes at most a day after the date it opens on.
    day = first - timedelta(days=1)
    while day <= last:
        for visit in scheduled_visits(routes, day):
            if since < visit.closes_at <= now and not lifts.visited(visit):
                found.append(
                    Violation(
                        kind=ViolationKind.MISSED_COLLECTION,
                        plate=visit.plate,
                        point=visit.point,
                        facility=None,
                        at=visit.closes_at,
                        details=(
                            f"no {visit.stream} bin lifted on route {visit.route} "
                            f"between {visit.opens_at:%Y-%m-%d %H:%M} and {visit.closes_at:%Y-%m-%d %H:%M}"
                        ),
                        dedup_key=f"missed_collection|{visit.route}|{visit.point}|{instant(visit.opens_at)}",
                        stream=visit.stream,
                    )
                )
        day += timedelta(days=1)
    return sorted(found, key=lambda v: (v.at, v.dedup_key))


@dataclass(frozen=True, slots=True)
class Coverage:
    day: date
    scheduled: int
    done: int

    @property
    def rate(self) -> float | None:
        """Scheduled point-visits done ÷ scheduled; None for a day with nothing due."""
        return self.done / self.scheduled if self.scheduled else None


def coverage_visits(
    routes: Iterable[Route], day: date, *, now: datetime | None = None
) -> list[ScheduledVisit]:
    """The point-visits ``day``'s collection coverage counts, as ``collection_coverage``
    does: those due in the windows opening on ``day`` and, with ``now``, closed by then (a day under
    way is not marked down for rounds still running). The database then counts those done, so no
    lift has to leave it."""
    return [visit for visit in scheduled_visits(routes, day) if now is None or visit.closes_at <= now]


def collection_coverage(
    routes: Iterable[Route], pickups: Iterable[Pickup], day: date, *, now: datetime | None = None
) -> Coverage:
    """How many of the point-visits due in the windows opening on ``day`` were done within them.

    With ``now``, only windows closed by then are counted, so a day under way is not marked down
    for rounds still running.
    """
    lifts = _Lifts(pickups)
    due = coverage_visits(routes, day, now=now)
    return Coverage(day, len(due), sum(lifts.visited(visit) for visit in due))
