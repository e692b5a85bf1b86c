"""Human-readable case numbers: district code + local date + a daily sequence (440106-20261125-000042)."""

from __future__ import annotations

from datetime import date, datetime

from citygrid.clock import CITY_TIMEZONE


def local_day(moment: datetime) -> date:
    return moment.astimezone(CITY_TIMEZONE).date()


def case_number(district_code: str, day: date, sequence: int) -> str:
    return f"{district_code}-{day:%Y%m%d}-{sequence:06d}"
