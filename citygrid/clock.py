"""Time as the city reads it: stored in UTC, shown in Asia/Shanghai (+08:00) as RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, PlainSerializer

CITY_TIMEZONE = ZoneInfo("Asia/Shanghai")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def city_time(moment: datetime) -> str:
    return _aware(moment).astimezone(CITY_TIMEZONE).isoformat()


CityTime = Annotated[
    datetime,
    AfterValidator(_aware),
    PlainSerializer(city_time, return_type=str, when_used="json"),
]
