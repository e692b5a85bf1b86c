"""Time as the city reads it: stored in UTC, shown in Asia/Shanghai (+08:00) as RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, PlainSerializer

CITY_TIMEZONE = ZoneInfo("Asia/Shanghai")


# What a city-management record can plausibly carry; also keeps values inside PostgreSQL's range.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def within_range(moment: datetime) -> datetime:
    """Refuse times outside 1970–2200 (a ValueError, so pydantic reports it as a 422)."""
    aware = _aware(moment)
    if not EARLIEST <= aware < LATEST:
        raise ValueError("time must be between 1970-01-01 and 2200-01-01")
    return aware


def city_time(moment: datetime) -> str:
    return _aware(moment).astimezone(CITY_TIMEZONE).isoformat()


CityTime = Annotated[
    datetime,
    AfterValidator(within_range),
    PlainSerializer(city_time, return_type=str, when_used="json"),
]
