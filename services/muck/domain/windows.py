"""When muck may be moved: an area's permitted transport windows in city time, a window may cross midnight.

A window runs [start, end): its start is permitted, its end is not. Guangzhou's central city allows
20:00–23:30; a window such as 22:00–06:00 runs past midnight into the next day.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["CITY_TZ", "TimeWindow", "parse_window", "permitted"]

# The kit's city zone too (citygrid.clock); Asia/Shanghai has kept +08:00 without DST since 1991.
CITY_TZ: Final = ZoneInfo("Asia/Shanghai")

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class TimeWindow:
    """A daily window of city wall-clock time; ``start > end`` crosses midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("a window's times are the city's wall-clock times, without a time zone")
        if self.start == self.end:
            # Either empty or the whole day: ambiguous, so a caller says which by having no window at all.
            raise ValueError(f"a window cannot start and end at {self.start:%H:%M}")

    def contains(self, local: time) -> bool:
        """Whether the city wall-clock time ``local`` is in the window (start in, end out)."""
        if local.tzinfo is not None:
            raise ValueError("pass the city's wall-clock time, without a time zone")
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def permitted(at: datetime, windows: Sequence[TimeWindow]) -> bool:
    """Whether any of the windows allows transport at the moment ``at`` (converted to city time)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a moment must carry its time zone")
    local = at.astimezone(CITY_TZ).time()
    return any(window.contains(local) for window in windows)


def _clock(hours: str, minutes: str, text: str, *, is_end: bool) -> time:
    hour, minute = int(hours), int(minutes)
    if is_end and (hour, minute) == (24, 0):
        # "20:00-24:00" is the evening up to midnight: the window ends where the next day starts.
        return time(0, 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"{text!r}: {hours}:{minutes} is not a time of day")
    return time(hour, minute)


def parse_window(text: str) -> TimeWindow:
    """A window from its text, ``"HH:MM-HH:MM"`` in city time; ``24:00`` is allowed as an end."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a window: write it as HH:MM-HH:MM, e.g. 20:00-23:30")
    start_h, start_m, end_h, end_m = match.groups()
    start = _clock(start_h, start_m, text, is_end=False)
    end = _clock(end_h, end_m, text, is_end=True)
    if start == end:
        raise ValueError(f"{text!r} starts and ends at the same time")
    return TimeWindow(start, end)
