"""Collection schedules in city time: the visits due, the ones missed once their window has ended
(a window crossing midnight ends the next day), and the day's coverage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest

from services.waste.domain.chain import CITY_TIMEZONE, Pickup, Stream
from services.waste.domain.chain_checks import ViolationKind
from services.waste.domain.chain_schedule import (
    CollectionWindow,
    Coverage,
    Route,
    Schedule,
    collection_coverage,
    missed_collections,
    scheduled_visits,
)

MONDAY, TUESDAY, SUNDAY = date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 6)
WEEKDAYS = frozenset(range(1, 6))
MORNING = CollectionWindow(time(5, 0), time(8, 0))
NIGHT = CollectionWindow(time(22, 0), time(6, 0))

FOOD_ROUND = Route(
    "R-FOOD-1", "沪A10001", Stream.FOOD, ("HP-0001", "HP-0002"), (Schedule(WEEKDAYS, MORNING),)
)
NIGHT_ROUND = Route("R-OTHER-9", "沪A30003", Stream.OTHER, ("HP-0003",), (Schedule(frozenset({1}), NIGHT),))


def city(day: date, hour: int, minute: int = 0, second: int = 0, microsecond: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, microsecond, tzinfo=CITY_TIMEZONE)


def lift(point: str, when: datetime, stream: Stream = Stream.FOOD, plate: str = "沪A10001") -> Pickup:
    return Pickup(plate, point, f"BIN-{point}", stream, 60.0, when)


def test_the_fixture_days_are_the_weekdays_they_say() -> None:
    assert (MONDAY.isoweekday(), TUESDAY.isoweekday(), SUNDAY.isoweekday()) == (1, 2, 7)


# -- windows and visits due ----------------------------------------------------------------------------


def test_a_weekday_round_is_due_at_each_of_its_points_on_weekdays_only() -> None:
    due = scheduled_visits([FOOD_ROUND], TUESDAY)
    assert [(v.route, v.point, v.plate, v.stream) for v in due] == [
        ("R-FOOD-1", "HP-0001", "沪A10001", Stream.FOOD),
        ("R-FOOD-1", "HP-0002", "沪A10001", Stream.FOOD),
    ]
    assert {(v.opens_at, v.closes_at, v.day) for v in due} == {(city(TUESDAY, 5), city(TUESDAY, 8), TUESDAY)}
    assert scheduled_visits([FOOD_ROUND], SUNDAY) == []


def test_a_window_crossing_midnight_belongs_to_the_day_it_opens_and_ends_the_next() -> None:
    (monday,) = scheduled_visits([NIGHT_ROUND], MONDAY)
    assert (monday.opens_at, monday.closes_at) == (city(MONDAY, 22), city(TUESDAY, 6))
    assert scheduled_visits([NIGHT_ROUND], TUESDAY) == []
    assert NIGHT.crosses_midnight
    assert not MORNING.crosses_midnight


def test_a_route_may_run_on_several_schedules() -> None:
    both = Route(
        "R-2", "沪A10001", Stream.FOOD, ("HP-0001",), (Schedule(WEEKDAYS, MORNING), Schedule(WEEKDAYS, NIGHT))
    )
    assert [v.opens_at.hour for v in scheduled_visits([both], TUESDAY)] == [5, 22]


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("05:00-08:00", MORNING),
        (" 22:00 - 06:00 ", NIGHT),
        ("5:00-8:00", MORNING),
        ("20:00-24:00", CollectionWindow(time(20, 0), time(0, 0))),
    ],
)
def test_a_window_is_written_as_hh_mm_to_hh_mm(text, window) -> None:
    assert CollectionWindow.parse(text) == window


def test_a_window_to_midnight_ends_where_the_next_day_starts() -> None:
    evening = CollectionWindow.parse("20:00-24:00")
    assert evening.on(TUESDAY) == (city(TUESDAY, 20), city(date(2026, 12, 2), 0))
    assert str(evening) == "20:00-00:00"


@pytest.mark.parametrize(
    "text", ["0500-0800", "05:00-05:00", "24:00-06:00", "05:60-08:00", "25:00-06:00", ""]
)
def test_a_window_that_is_not_one_is_refused(text) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        CollectionWindow.parse(text)


def test_a_window_is_wall_clock_time_without_a_zone() -> None:
    with pytest.raises(ValueError, match="wall-clock"):
        CollectionWindow(time(5, 0, tzinfo=UTC), time(8, 0))


@pytest.mark.parametrize("weekdays", [frozenset(), frozenset({0}), frozenset({8}), frozenset({1, 7, 9})])
def test_weekdays_run_from_1_monday_to_7_sunday(weekdays) -> None:
    with pytest.raises(ValueError, match="weekdays"):
        Schedule(weekdays, MORNING)


def test_a_route_listing_a_point_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="HP-0001"):
        Route(
            "R-1", "沪A10001", Stream.FOOD, ("HP-0001", "HP-0002", "HP-0001"), (Schedule(WEEKDAYS, MORNING),)
        )


# -- missed collections --------------------------------------------------------------------------------


def test_a_point_not_visited_by_the_end_of_its_window_is_a_missed_collection() -> None:
    found = missed_collections(
        [FOOD_ROUND], [lift("HP-0001", city(TUESDAY, 6))], since=city(TUESDAY, 0), now=city(TUESDAY, 9)
    )
    assert [(v.kind, v.plate, v.point, v.facility, v.at) for v in found] == [
        (ViolationKind.MISSED_COLLECTION, "沪A10001", "HP-0002", None, city(TUESDAY, 8))
    ]
    assert found[0].dedup_key == "missed_collection|R-FOOD-1|HP-0002|2026-11-30T21:00:00.000000+00:00"
    assert found[0].stream is Stream.FOOD
    assert (
        found[0].details
        == "no food bin lifted on route R-FOOD-1 between 2026-12-01 05:00 and 2026-12-01 08:00"
    )


@pytest.mark.parametrize(
    ("when", "visited"),
    [
        (city(TUESDAY, 4, 59, 59), False),
        (city(TUESDAY, 5), True),
        (city(TUESDAY, 7, 59, 59, 999_999), True),
        (city(TUESDAY, 8), False),
    ],
)
def test_a_visit_counts_from_the_windows_start_to_just_before_its_end(when, visited) -> None:
    found = missed_collections(
        [FOOD_ROUND],
        [lift("HP-0001", when), lift("HP-0002", city(TUESDAY, 6))],
        since=city(TUESDAY, 0),
        now=city(TUESDAY, 9),
    )
    assert ("HP-0001" not in [v.point for v in found]) is visited


def test_a_window_that_opened_before_the_route_took_its_form_is_not_due() -> None:
    registered_during_the_window = replace(FOOD_ROUND, effective_from=city(TUESDAY, 6))
    registered_before = replace(FOOD_ROUND, effective_from=city(TUESDAY, 5))

    assert (
        missed_collections([registered_during_the_window], [], since=city(TUESDAY, 0), now=city(TUESDAY, 9))
        == []
    )
    assert len(missed_collections([registered_before], [], since=city(TUESDAY, 0), now=city(TUESDAY, 9))) == 2


def test_only_windows_that_have_ended_count() -> None:
    assert missed_collections([FOOD_ROUND], [], since=city(TUESDAY, 0), now=city(TUESDAY, 7, 59)) == []
    at_the_end = missed_collections([FOOD_ROUND], [], since=city(TUESDAY, 0), now=city(TUESDAY, 8))
    assert [v.point for v in at_the_end] == ["HP-0001", "HP-0002"]


def test_a_night_window_is_missed_only_once_it_ends_the_next_morning() -> None:
    since = city(MONDAY, 12)
    assert missed_collections([NIGHT_ROUND], [], since=since, now=city(TUESDAY, 5, 59)) == []
    (found,) = missed_collections([NIGHT_ROUND], [], since=since, now=city(TUESDAY, 7))
    assert found.at == city(TUESDAY, 6)
    assert found.point == "HP-0003"


def test_a_night_window_is_visited_after_midnight() -> None:
    after_midnight = lift("HP-0003", city(TUESDAY, 1), Stream.OTHER, "沪A30003")
    assert (
        missed_collections([NIGHT_ROUND], [after_midnight], since=city(MONDAY, 12), now=city(TUESDAY, 7))
        == []
    )


def test_a_night_window_is_found_from_a_span_that_starts_the_day_after_it_opened() -> None:
    (found,) = missed_collections([NIGHT_ROUND], [], since=city(TUESDAY, 0), now=city(TUESDAY, 7))
    assert found.at == city(TUESDAY, 6)


def test_a_bin_of_another_stream_is_no_visit_but_a_substitute_vehicle_is() -> None:
    wrong_stream = [lift("HP-0001", city(TUESDAY, 6), Stream.OTHER), lift("HP-0002", city(TUESDAY, 6))]
    found = missed_collections([FOOD_ROUND], wrong_stream, since=city(TUESDAY, 0), now=city(TUESDAY, 9))
    assert [v.point for v in found] == ["HP-0001"]
    substitute = [lift("HP-0001", city(TUESDAY, 6), plate="沪A99999"), lift("HP-0002", city(TUESDAY, 6))]
    assert missed_collections([FOOD_ROUND], substitute, since=city(TUESDAY, 0), now=city(TUESDAY, 9)) == []


def test_a_window_closed_before_the_span_is_not_found_again_and_overlapping_spans_agree() -> None:
    assert missed_collections([FOOD_ROUND], [], since=city(TUESDAY, 8), now=city(TUESDAY, 12)) == []
    first = missed_collections([FOOD_ROUND], [], since=city(MONDAY, 0), now=city(TUESDAY, 9))
    second = missed_collections([FOOD_ROUND], [], since=city(TUESDAY, 0), now=city(TUESDAY, 12))
    assert [v.at.day for v in first] == [30, 30, 1, 1]
    assert {v.dedup_key for v in second} <= {v.dedup_key for v in first}
    assert len(second) == 2


def test_the_span_may_be_given_in_any_zone() -> None:
    utc = missed_collections(
        [FOOD_ROUND],
        [],
        since=datetime(2026, 11, 30, 16, 0, tzinfo=UTC),
        now=datetime(2026, 12, 1, 1, 0, tzinfo=UTC),
    )
    assert [v.at for v in utc] == [city(TUESDAY, 8), city(TUESDAY, 8)]
    other = timezone(timedelta(hours=-5))
    assert (
        len(
            missed_collections(
                [FOOD_ROUND], [], since=city(TUESDAY, 0).astimezone(other), now=city(TUESDAY, 9)
            )
        )
        == 2
    )


def test_pickups_out_of_order_and_resent_visit_the_same() -> None:
    pickups = [
        lift("HP-0002", city(TUESDAY, 7)),
        lift("HP-0001", city(TUESDAY, 6)),
        lift("HP-0002", city(TUESDAY, 7)),
    ]
    assert missed_collections([FOOD_ROUND], pickups, since=city(TUESDAY, 0), now=city(TUESDAY, 9)) == []


def test_no_routes_miss_nothing() -> None:
    assert missed_collections([], [], since=city(MONDAY, 0), now=city(TUESDAY, 0)) == []


def test_the_span_must_carry_its_time_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        missed_collections([FOOD_ROUND], [], since=datetime(2026, 12, 1), now=city(TUESDAY, 9))


# -- coverage ------------------------------------------------------------------------------------------


def test_coverage_is_the_share_of_the_days_point_visits_done_in_their_windows() -> None:
    pickups = [
        lift("HP-0001", city(TUESDAY, 6)),
        lift("HP-0002", city(TUESDAY, 9)),  # after its window: not done
        lift("HP-0003", city(TUESDAY, 23), Stream.OTHER),  # Tuesday has no night round
    ]
    coverage = collection_coverage([FOOD_ROUND, NIGHT_ROUND], pickups, TUESDAY)
    assert coverage == Coverage(TUESDAY, scheduled=2, done=1)
    assert coverage.rate == pytest.approx(0.5)


def test_a_night_window_counts_on_the_day_it_opens() -> None:
    done = [lift("HP-0003", city(TUESDAY, 2), Stream.OTHER)]
    assert collection_coverage([NIGHT_ROUND], done, MONDAY) == Coverage(MONDAY, 1, 1)
    assert collection_coverage([NIGHT_ROUND], done, TUESDAY) == Coverage(TUESDAY, 0, 0)


def test_a_day_under_way_counts_only_the_windows_already_closed() -> None:
    both = [FOOD_ROUND, NIGHT_ROUND]
    assert collection_coverage(both, [], MONDAY, now=city(MONDAY, 12)) == Coverage(MONDAY, 2, 0)
    assert collection_coverage(both, [], MONDAY, now=city(TUESDAY, 6)) == Coverage(MONDAY, 3, 0)


def test_a_day_with_nothing_due_has_no_coverage_rate() -> None:
    assert collection_coverage([FOOD_ROUND], [], SUNDAY).rate is None
    assert collection_coverage([], [], TUESDAY).rate is None
