"""The chain's figures: tonnage by stream and city day, the recycling and resource-utilisation rates
beside the national targets, and each point's violation rate."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from services.waste.domain.chain import (
    CITY_TIMEZONE,
    DepotDeparture,
    Facility,
    FacilityKind,
    Pickup,
    Stream,
    Vehicle,
    VehicleType,
    Weighing,
    assemble_trips,
)
from services.waste.domain.chain_checks import Violation, ViolationKind
from services.waste.domain.chain_figures import (
    RECYCLING_TARGET,
    RESOURCE_UTILISATION_TARGET,
    ChainRates,
    PointRate,
    chain_rates,
    tonnage_by_stream_and_day,
    violation_rates_by_point,
)
from services.waste.domain.chain_schedule import (
    CollectionWindow,
    Route,
    Schedule,
    collection_coverage,
    coverage_visits,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=CITY_TIMEZONE)
FOOD, RECYCLABLE, OTHER, SWEEPER = "沪A10001", "沪A20002", "沪A30003", "沪A40004"
VEHICLES = {
    FOOD: Vehicle(FOOD, VehicleType.COLLECTION, Stream.FOOD, "DEPOT-1"),
    RECYCLABLE: Vehicle(RECYCLABLE, VehicleType.COLLECTION, Stream.RECYCLABLE, "DEPOT-1"),
    OTHER: Vehicle(OTHER, VehicleType.COLLECTION, Stream.OTHER, "DEPOT-1"),
    SWEEPER: Vehicle(SWEEPER, VehicleType.CLEANING, Stream.OTHER, "DEPOT-2"),
}
FACILITIES = {
    "F-FOOD": Facility("F-FOOD", FacilityKind.FOOD_WASTE_TREATMENT, frozenset({Stream.FOOD})),
    "F-BURN": Facility("F-BURN", FacilityKind.INCINERATION, frozenset({Stream.OTHER, Stream.FOOD})),
    "F-RECYCLE": Facility("F-RECYCLE", FacilityKind.RECYCLING, frozenset({Stream.RECYCLABLE})),
    "T-1": Facility("T-1", FacilityKind.TRANSFER_STATION, frozenset(Stream)),
}


def weighed(plate: str, tonnes: float, facility: str, when: datetime = T0) -> Weighing:
    return Weighing(plate, facility, 10_000.0 + tonnes * 1000, 10_000.0, when)


def test_the_targets_are_35_percent_recycling_and_60_percent_resource_utilisation() -> None:
    assert (RECYCLING_TARGET, RESOURCE_UTILISATION_TARGET) == (0.35, 0.60)


# -- tonnage -------------------------------------------------------------------------------------------


def test_tonnage_is_the_weighbridge_net_by_the_unloading_vehicles_stream_and_the_city_day() -> None:
    late = T0.replace(hour=23, minute=30)
    weighings = [
        weighed(FOOD, 4.2, "F-FOOD"),
        weighed(FOOD, 3.8, "F-FOOD", late),
        weighed(FOOD, 5.0, "F-FOOD", late + timedelta(hours=1)),  # 00:30 the next day, still the 1st in UTC
        weighed(OTHER, 7.5, "F-BURN"),
        weighed(SWEEPER, 1.5, "T-1"),
    ]
    assert tonnage_by_stream_and_day(weighings, VEHICLES) == {
        T0.date(): {Stream.FOOD: pytest.approx(8.0), Stream.OTHER: pytest.approx(9.0)},
        T0.date() + timedelta(days=1): {Stream.FOOD: pytest.approx(5.0)},
    }


def test_a_weighing_resent_counts_once() -> None:
    once = weighed(RECYCLABLE, 2.0, "F-RECYCLE")
    assert tonnage_by_stream_and_day([once, once], VEHICLES) == {T0.date(): {Stream.RECYCLABLE: 2.0}}


def test_a_vehicle_not_in_the_register_is_not_counted_so_waste_passing_a_transfer_station_counts_once() -> (
    None
):
    at_the_station = weighed(OTHER, 6.0, "T-1")
    onward = weighed("沪B77777", 6.0, "F-BURN", T0 + timedelta(hours=2))  # the station's trailer
    assert tonnage_by_stream_and_day([at_the_station, onward], VEHICLES) == {T0.date(): {Stream.OTHER: 6.0}}


def test_no_weighings_weigh_nothing() -> None:
    assert tonnage_by_stream_and_day([], VEHICLES) == {}


# -- rates ---------------------------------------------------------------------------------------------


def test_rates_at_the_targets_meet_them() -> None:
    rates = chain_rates(
        [
            weighed(RECYCLABLE, 35.0, "F-RECYCLE"),
            weighed(FOOD, 25.0, "F-FOOD"),
            weighed(OTHER, 40.0, "F-BURN"),
        ],
        VEHICLES,
        FACILITIES,
    )
    assert rates == ChainRates(total_t=100.0, recyclable_t=35.0, food_treated_t=25.0)
    assert rates.recycling_rate == pytest.approx(0.35)
    assert rates.resource_utilisation_rate == pytest.approx(0.60)
    assert rates.meets_recycling_target is True
    assert rates.meets_resource_utilisation_target is True


def test_rates_just_under_the_targets_miss_them() -> None:
    rates = ChainRates(total_t=100.0, recyclable_t=34.9, food_treated_t=25.0)
    assert rates.meets_recycling_target is False
    assert rates.meets_resource_utilisation_target is False


def test_food_burnt_or_left_at_a_transfer_station_is_not_treated_unless_the_city_says_so() -> None:
    weighings = [weighed(FOOD, 10.0, "F-FOOD"), weighed(FOOD, 5.0, "F-BURN"), weighed(FOOD, 5.0, "T-1")]
    rates = chain_rates(weighings, VEHICLES, FACILITIES)
    assert rates.total_t == pytest.approx(20.0)
    assert rates.food_treated_t == pytest.approx(10.0)
    assert rates.resource_utilisation_rate == pytest.approx(0.5)
    assert rates.recycling_rate == 0
    with_stations = chain_rates(
        weighings,
        VEHICLES,
        FACILITIES,
        food_treatment=frozenset({FacilityKind.FOOD_WASTE_TREATMENT, FacilityKind.TRANSFER_STATION}),
    )
    assert with_stations.food_treated_t == pytest.approx(15.0)


def test_food_at_a_facility_not_in_the_register_is_not_treated() -> None:
    assert chain_rates([weighed(FOOD, 3.0, "NOWHERE")], VEHICLES, FACILITIES).food_treated_t == 0


def test_nothing_weighed_has_no_rates() -> None:
    rates = chain_rates([], VEHICLES, FACILITIES)
    assert (rates.recycling_rate, rates.resource_utilisation_rate) == (None, None)
    assert (rates.meets_recycling_target, rates.meets_resource_utilisation_target) == (None, None)


# -- violation rate per point --------------------------------------------------------------------------


def violation(kind: ViolationKind, point: str | None, key: str, facility: str | None = None) -> Violation:
    return Violation(kind, FOOD, point, facility, T0, "", key)


def trips_serving(*rounds: tuple[str, ...]):
    pickups, departures = [], []
    for i, points in enumerate(rounds):
        start = T0 + timedelta(hours=i)
        departures.append(DepotDeparture(FOOD, "DEPOT-1", start))
        pickups += [
            Pickup(FOOD, point, f"BIN-{i}-{j}", Stream.FOOD, 50.0, start + timedelta(minutes=j + 1))
            for j, point in enumerate(points)
        ]
        # Two bins at one point in one trip are one occasion.
        pickups.append(
            Pickup(FOOD, points[0], f"BIN-{i}-x", Stream.FOOD, 50.0, start + timedelta(minutes=30))
        )
    weighings = [
        Weighing(FOOD, "F-FOOD", 9_000.0, 8_000.0, T0 + timedelta(hours=i, minutes=50))
        for i in range(len(rounds))
    ]
    return assemble_trips(pickups, weighings, departures)


def test_a_points_violation_rate_is_its_violations_over_the_trips_that_served_it_and_the_visits_missed() -> (
    None
):
    trips = trips_serving(("HP-1", "HP-2"), ("HP-1", "HP-2"), ("HP-1",), ("HP-1",))
    violations = [
        violation(ViolationKind.MIXED_LOAD, "HP-1", "a"),
        violation(ViolationKind.MIXED_LOAD, "HP-1", "a"),  # the same one, stored twice
        violation(ViolationKind.MISSED_COLLECTION, "HP-2", "b"),
        violation(ViolationKind.WEIGHT_MISMATCH, None, "c", facility="F-FOOD"),
    ]
    rates = violation_rates_by_point(violations, trips + trips)
    assert rates == {"HP-1": PointRate("HP-1", 1, 4), "HP-2": PointRate("HP-2", 1, 3)}
    assert rates["HP-1"].rate == pytest.approx(0.25)
    assert rates["HP-2"].rate == pytest.approx(1 / 3)


def test_a_point_served_without_violations_has_a_rate_of_nothing() -> None:
    assert violation_rates_by_point([], trips_serving(("HP-1",))) == {"HP-1": PointRate("HP-1", 0, 1)}
    assert violation_rates_by_point([], trips_serving(("HP-1",)))["HP-1"].rate == 0


def test_a_point_with_violations_but_no_trip_in_the_span_has_no_rate() -> None:
    rates = violation_rates_by_point([violation(ViolationKind.MIXED_LOAD, "HP-9", "a")], [])
    assert rates == {"HP-9": PointRate("HP-9", 1, 0)}
    assert rates["HP-9"].rate is None


def test_no_trips_and_no_violations_rate_no_point() -> None:
    assert violation_rates_by_point([], []) == {}


# -- collection coverage -------------------------------------------------------------------------------

MONDAY = date(2026, 11, 30)
MORNING_ROUND = Route(
    "R-FOOD-1",
    FOOD,
    Stream.FOOD,
    ("HP-0001", "HP-0002"),
    (Schedule(frozenset(range(1, 6)), CollectionWindow(time(5, 0), time(8, 0))),),
)
NIGHT_ROUND = Route(
    "R-OTHER-1",
    OTHER,
    Stream.OTHER,
    ("HP-0001",),
    (Schedule(frozenset({1}), CollectionWindow(time(22, 0), time(6, 0))),),
)


def at_city(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=CITY_TIMEZONE)


def test_coverage_counts_the_visits_due_on_the_day_as_the_schedule_does() -> None:
    routes = [MORNING_ROUND, NIGHT_ROUND]
    due = coverage_visits(routes, MONDAY)
    assert [(v.route, v.point) for v in due] == [
        ("R-FOOD-1", "HP-0001"),
        ("R-FOOD-1", "HP-0002"),
        ("R-OTHER-1", "HP-0001"),
    ]
    assert len(due) == collection_coverage(routes, [], MONDAY).scheduled
    assert coverage_visits(routes, MONDAY + timedelta(days=6)) == []  # a Sunday


def test_on_a_day_under_way_coverage_counts_only_the_windows_closed_by_now() -> None:
    routes = [MORNING_ROUND, NIGHT_ROUND]
    for now, counted in (
        (at_city(MONDAY, 7), 0),
        (at_city(MONDAY, 8), 2),  # a window closing now is closed
        (at_city(MONDAY + timedelta(days=1), 6), 3),  # the night round, the next morning
    ):
        due = coverage_visits(routes, MONDAY, now=now)
        assert len(due) == counted == collection_coverage(routes, [], MONDAY, now=now).scheduled
