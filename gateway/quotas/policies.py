"""Quota policies and what a response says of them: pure, no I/O.

Two fixed windows per subject: a minute (the rate limit, aligned to the epoch's minutes) and a day
(the daily quota, the city's calendar day). The response fields are those of the IETF draft
"RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers-08 and later): the
policies in ``RateLimit-Policy`` (``"minute";q=600;w=60``), where the caller stands in ``RateLimit``
(``"minute";r=598;t=42``), each item named by its policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from citygrid.clock import CITY_TIMEZONE


class Period(StrEnum):
    MINUTE = "minute"
    DAY = "day"


@dataclass(frozen=True)
class Allowance:
    """What a subject may do: requests per minute, and per city day (None: no daily quota)."""

    per_minute: int
    per_day: int | None = None

    def policies(self) -> tuple[tuple[Period, int], ...]:
        if self.per_day is None:
            return ((Period.MINUTE, self.per_minute),)
        return ((Period.MINUTE, self.per_minute), (Period.DAY, self.per_day))


def window_of(period: Period, moment: float) -> tuple[int, int]:
    """The window of ``period`` holding ``moment`` (epoch seconds): its start and end, epoch seconds."""
    if period is Period.MINUTE:
        start = math.floor(moment / 60.0) * 60
        return start, start + 60
    local = datetime.fromtimestamp(moment, CITY_TIMEZONE)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (midnight + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp()), int(following.timestamp())


def window_seconds(period: Period) -> int:
    return 60 if period is Period.MINUTE else 86_400


@dataclass(frozen=True)
class Standing:
    """Where a subject stands in one policy's window after a request counted (or was refused)."""

    period: Period
    limit: int
    remaining: int
    reset_seconds: int  # until the window ends and the whole quota is back


def reset_seconds(window_end: int, moment: float) -> int:
    return max(1, math.ceil(window_end - moment))


def headers(standings: tuple[Standing, ...]) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit``, one item per policy."""
    return {
        "RateLimit-Policy": ", ".join(
            f'"{s.period}";q={s.limit};w={window_seconds(s.period)}' for s in standings
        ),
        "RateLimit": ", ".join(
            f'"{s.period}";r={max(0, s.remaining)};t={s.reset_seconds}' for s in standings
        ),
    }


def wanted(rate_per_second: float, reserve_seconds: float, minimum: int, limit: int) -> int:
    """How many requests to reserve for the next ``reserve_seconds`` at the rate seen (at least
    ``minimum``: the ledger asks at least for the requests seen since it last settled, and a few
    more; at most the limit): a replica that reserves enough rarely waits on the database."""
    return max(1, min(limit, max(minimum, math.ceil(rate_per_second * reserve_seconds))))


def granted(want: int, used: int, limit: int) -> int:
    """What the ledger grants of ``want`` when ``used`` of ``limit`` is taken: at most half of what
    is left (another replica's need gets the other half), at least one while one is left. The SQL of
    ``ledger`` computes the same; this is the arithmetic it follows, stated once and tested."""
    left = limit - used
    if left <= 0:
        return 0
    return min(want, math.ceil(left / 2))


def offline_share(limit: int, replicas: int) -> int:
    """A replica's share of a window while the ledger cannot be reached: the limit split evenly."""
    return limit // max(1, replicas)
