"""Case numbers: ``<district>-<local day in Asia/Shanghai>-<six-digit daily sequence>``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from citygrid.clock import CITY_TIMEZONE
from services.case.domain.numbering import case_number, local_day


def test_the_city_keeps_shanghai_time():
    assert str(CITY_TIMEZONE) == "Asia/Shanghai"


def test_a_late_utc_evening_is_already_the_next_day_in_the_city():
    assert local_day(datetime(2026, 11, 24, 17, 30, tzinfo=UTC)) == date(2026, 11, 25)


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 11, 24, 15, 59, 59, tzinfo=UTC), date(2026, 11, 24)),
        (datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC), date(2026, 11, 25)),
        (datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC), date(2026, 11, 25)),
        (datetime(2026, 12, 31, 16, 0, 0, tzinfo=UTC), date(2027, 1, 1)),
    ],
)
def test_the_local_day_turns_at_sixteen_hundred_utc(moment, day):
    assert local_day(moment) == day


def test_the_local_day_does_not_depend_on_the_offset_the_moment_is_given_in():
    in_utc = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)
    in_new_york = in_utc.astimezone(timezone(timedelta(hours=-5)))
    in_shanghai = in_utc.astimezone(CITY_TIMEZONE)
    assert local_day(in_utc) == local_day(in_new_york) == local_day(in_shanghai) == date(2026, 11, 25)


def test_a_case_number_is_district_date_and_zero_padded_sequence():
    assert case_number("440106", date(2026, 11, 25), 42) == "440106-20261125-000042"


@pytest.mark.parametrize(
    ("sequence", "suffix"),
    [(1, "000001"), (10, "000010"), (999, "000999"), (123456, "123456"), (999999, "999999")],
)
def test_the_daily_sequence_is_padded_to_six_digits(sequence, suffix):
    assert case_number("440106", date(2026, 1, 5), sequence) == f"440106-20260105-{suffix}"


def test_month_and_day_are_zero_padded_too():
    assert case_number("310101", date(2027, 3, 7), 1) == "310101-20270307-000001"


def test_the_number_of_a_late_utc_report_carries_the_local_date():
    moment = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)
    assert case_number("440106", local_day(moment), 7) == "440106-20261125-000007"
