"""Daily windows of city wall-clock time: a drop-off point's opening hours, a route's collection window.

A window runs [start, end): its start is in, its end is not. ``22:00-02:00`` starts one evening and
ends after midnight; ``24:00`` may end a window. Pure: stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Final
from zoneinfo import ZoneInfo

# The kit's city zone too (citygrid.clock); Asia/Shanghai has kept +08:00 without DST since 1991.
CITY_TZ: Final = ZoneInfo("Asia/Shanghai")

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class DailyWindow:
    """A window of the city's wall-clock time, every day; ``start > end`` crosses midnight."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start == self.end:
            # Empty or the whole day: ambiguous, so a point open around the clock has no windows at all.
            raise ValueError(f"a window cannot start and end at {self.start:%H:%M}")

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _clock(hours: str, minutes: str, text: str, *, is_end: bool) -> time:
    hour, minute = int(hours), int(minutes)
    if is_end and (hour, minute) == (24, 0):
        return time(0, 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"{text!r}: {hours}:{minutes} is not a time of day")
    return time(hour, minute)


def parse_window(text: str) -> DailyWindow:
    """``"HH:MM-HH:MM"`` in city time; ``ValueError`` naming the text when it is not one."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a window: write it as HH:MM-HH:MM, e.g. 07:00-09:00")
    start_h, start_m, end_h, end_m = match.groups()
    start = _clock(start_h, start_m, text, is_end=False)
    end = _clock(end_h, end_m, text, is_end=True)
    if start == end:
        raise ValueError(f"{text!r} starts and ends at the same time")
    return DailyWindow(start, end)


def is_open(at: datetime, windows: Sequence[DailyWindow]) -> bool:
    """Whether a point with these opening hours is open at ``at``; no windows: open around the clock."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a moment must carry its time zone")
    if not windows:
        return True
    local = at.astimezone(CITY_TZ).time()
    return any(window.contains(local) for window in windows)
