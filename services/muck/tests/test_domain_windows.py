"""Permitted transport windows in city time: start in, end out, windows that cross midnight."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from services.muck.domain.windows import CITY_TZ, TimeWindow, parse_window, permitted

CENTRAL_CITY = TimeWindow(time(20, 0), time(23, 30))  # Guangzhou's central city
NIGHT = TimeWindow(time(22, 0), time(6, 0))


def city(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=CITY_TZ)


def test_the_city_time_zone_is_shanghai_at_plus_eight_hours():
    assert str(CITY_TZ) == "Asia/Shanghai"
    assert city(1, 12, 0).utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        (time(19, 59, 59), False),
        (time(20, 0), True),
        (time(21, 45), True),
        (time(23, 29, 59), True),
        (time(23, 29, 59, 999_999), True),
        (time(23, 30), False),
        (time(23, 31), False),
        (time(0, 0), False),
    ],
)
def test_the_central_city_window_from_20_to_23_30_starts_inclusive_and_ends_exclusive(local, inside):
    assert CENTRAL_CITY.contains(local) is inside


def test_a_window_from_20_to_23_30_does_not_permit_23_31():
    assert not permitted(city(1, 23, 31), [CENTRAL_CITY])


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        (time(21, 59, 59), False),
        (time(22, 0), True),
        (time(23, 0), True),
        (time(0, 0), True),
        (time(5, 59), True),
        (time(5, 59, 59), True),
        (time(6, 0), False),
        (time(12, 0), False),
    ],
)
def test_a_window_from_22_to_6_runs_past_midnight(local, inside):
    assert NIGHT.contains(local) is inside


def test_a_window_crossing_midnight_permits_both_sides_of_the_date_boundary():
    assert permitted(city(1, 23, 59, 59), [NIGHT])
    assert permitted(city(2, 0, 0), [NIGHT])
    assert not permitted(city(2, 6, 0), [NIGHT])


def test_a_moment_is_read_in_city_time_whatever_its_zone():
    assert permitted(datetime(2026, 12, 1, 12, 30, tzinfo=UTC), [CENTRAL_CITY])  # 20:30 in the city
    assert not permitted(datetime(2026, 12, 1, 20, 30, tzinfo=UTC), [CENTRAL_CITY])  # 04:30 next day


def test_a_moment_on_the_previous_day_in_utc_is_in_a_window_of_the_next_city_day():
    # 2026-12-01 22:30Z is 2026-12-02 06:30 in the city; the window opens at 06:00 city time.
    morning = TimeWindow(time(6, 0), time(9, 0))
    at = datetime(2026, 12, 1, 22, 30, tzinfo=UTC)
    assert at.astimezone(CITY_TZ).date() != at.date()
    assert permitted(at, [morning])
    # And 15:59:59Z on the 1st is 23:59:59 city time, inside a night window, 16:00Z is past midnight.
    assert permitted(datetime(2026, 12, 1, 15, 59, 59, tzinfo=UTC), [NIGHT])
    assert permitted(datetime(2026, 12, 1, 16, 0, tzinfo=UTC), [NIGHT])
    assert not permitted(datetime(2026, 12, 1, 22, 0, tzinfo=UTC), [NIGHT])  # 06:00 city time


def test_a_moment_in_another_offset_is_converted_too():
    tokyo = timezone(timedelta(hours=9))
    assert permitted(datetime(2026, 12, 1, 21, 0, tzinfo=tokyo), [CENTRAL_CITY])  # 20:00 in the city


def test_any_of_several_windows_permits():
    windows = [CENTRAL_CITY, TimeWindow(time(5, 0), time(6, 0))]
    assert permitted(city(1, 5, 30), windows)
    assert permitted(city(1, 20, 30), windows)
    assert not permitted(city(1, 12, 0), windows)


def test_no_window_permits_nothing():
    assert not permitted(city(1, 21, 0), [])


def test_a_naive_moment_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        permitted(datetime(2026, 12, 1, 21, 0), [CENTRAL_CITY])


def test_a_window_that_starts_where_it_ends_is_refused():
    with pytest.raises(ValueError, match="cannot start and end"):
        TimeWindow(time(20, 0), time(20, 0))


def test_a_window_of_aware_times_is_refused():
    with pytest.raises(ValueError, match="wall-clock"):
        TimeWindow(time(20, 0, tzinfo=UTC), time(23, 30))


def test_a_window_is_parsed_from_its_text_and_written_back_the_same():
    window = parse_window("20:00-23:30")
    assert window == CENTRAL_CITY
    assert str(window) == "20:00-23:30"
    assert parse_window(" 22:00 - 06:00 ") == NIGHT
    assert parse_window("8:15-9:00") == TimeWindow(time(8, 15), time(9, 0))


def test_24_00_ends_a_window_at_midnight():
    window = parse_window("20:00-24:00")
    assert window == TimeWindow(time(20, 0), time(0, 0))
    assert window.contains(time(23, 59, 59))
    assert not window.contains(time(0, 0))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "20:00",
        "20-23",
        "20:00–23:30",
        "20:00-23:60",
        "25:00-23:00",
        "24:00-06:00",
        "20:00-20:00",
        "8pm-11pm",
    ],
)
def test_bad_window_text_is_refused_with_a_clear_error(text):
    with pytest.raises(ValueError, match=r"window|time of day|same time"):
        parse_window(text)
