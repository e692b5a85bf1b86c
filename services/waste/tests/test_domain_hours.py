"""Opening hours and collection windows: city wall-clock windows, some past midnight."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from services.waste.domain.hours import CITY_TZ, DailyWindow, is_open, parse_window


def city(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 3, hour, minute, tzinfo=CITY_TZ)


def test_a_window_contains_its_start_and_not_its_end():
    window = parse_window("07:00-09:00")
    assert window.contains(time(7, 0))
    assert window.contains(time(8, 59))
    assert not window.contains(time(9, 0))
    assert not window.contains(time(6, 59))


def test_a_window_that_crosses_midnight_runs_into_the_next_morning():
    window = parse_window("22:00-02:00")
    assert window.contains(time(23, 30))
    assert window.contains(time(0, 0))
    assert window.contains(time(1, 59))
    assert not window.contains(time(2, 0))
    assert not window.contains(time(21, 59))


def test_24_00_ends_a_window_at_midnight():
    assert parse_window("20:00-24:00") == DailyWindow(time(20, 0), time(0, 0))


@pytest.mark.parametrize("text", ["7-9", "07:00", "25:00-26:00", "08:60-09:00", "08:00-08:00", "24:00-06:00"])
def test_a_text_that_is_no_window_is_refused(text):
    with pytest.raises(ValueError, match=r"window|time|same"):
        parse_window(text)


def test_a_point_is_open_in_any_of_its_windows_in_city_time():
    hours = [parse_window("07:00-09:00"), parse_window("18:00-21:00")]
    assert is_open(city(7, 30), hours)
    assert is_open(city(20, 59), hours)
    assert not is_open(city(12), hours)
    # 10:00 UTC is 18:00 in Guangzhou.
    assert is_open(datetime(2026, 12, 3, 10, 0, tzinfo=UTC), hours)


def test_a_point_without_windows_is_open_around_the_clock():
    assert is_open(city(3), [])


def test_a_moment_without_a_time_zone_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        is_open(datetime(2026, 12, 3, 8), [parse_window("07:00-09:00")])
