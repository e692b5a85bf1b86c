"""Positions turned into movements: depot departures and returns, facility arrivals, stops outside
every registered place; and those movements carried through trips to the checks."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import pytest
import shapely

from services.waste.domain.chain import (
    CITY_TIMEZONE,
    DepotDeparture,
    DepotReturn,
    Facility,
    FacilityArrival,
    FacilityKind,
    Pickup,
    Stop,
    Stream,
    Vehicle,
    VehicleType,
    Weighing,
    assemble_trips,
)
from services.waste.domain.chain_checks import ViolationKind, check_trips
from services.waste.domain.chain_movements import (
    Places,
    Position,
    circle,
    derive_movements,
    derive_track,
    resume_points,
)

PLATE = "沪A10001"
T0 = datetime(2026, 12, 1, 5, 0, tzinfo=CITY_TIMEZONE)
DEPOT = (121.400, 31.200)
POINT = (121.450, 31.200)
FACILITY = (121.500, 31.200)
ROAD = (121.475, 31.200)  # between the point and the facility, in no place

PLACES = Places(
    depots={"DEPOT-1": shapely.box(121.399, 31.199, 121.401, 31.201)},
    facilities={"F-FOOD": shapely.box(121.499, 31.199, 121.501, 31.201)},
    others={"HP-0001": shapely.Point(*POINT).buffer(0.0003)},
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pos(seconds: float, where: tuple[float, float], speed: float = 30.0, plate: str = PLATE) -> Position:
    return Position(plate, at(seconds), where[0], where[1], speed)


def standing(start: float, where: tuple[float, float], count: int, plate: str = PLATE) -> list[Position]:
    """``count`` positions 30 s apart at a standstill."""
    return [pos(start + i * 30, where, 0.0, plate) for i in range(count)]


ROUND = [
    *standing(0, DEPOT, 3),
    pos(90, (121.420, 31.200)),
    *standing(120, POINT, 10),  # five minutes at the collection point: expected
    pos(420, (121.460, 31.200)),
    *standing(450, ROAD, 25),  # twelve minutes on the road
    pos(1_200, (121.490, 31.200)),
    pos(1_230, FACILITY, 5.0),
    pos(1_500, (121.450, 31.200)),
    pos(1_800, DEPOT, 4.0),
]


def test_a_round_gives_its_departure_arrival_stop_and_return() -> None:
    assert derive_movements(ROUND, PLACES) == [
        DepotDeparture(PLATE, "DEPOT-1", at(90)),
        Stop(PLATE, at(450), at(450 + 24 * 30), *ROAD),
        FacilityArrival(PLATE, "F-FOOD", at(1_230)),
        DepotReturn(PLATE, "DEPOT-1", at(1_800)),
    ]


def test_positions_in_any_order_or_resent_give_the_same_movements() -> None:
    shuffled = ROUND * 2
    random.Random(3).shuffle(shuffled)
    assert derive_movements(shuffled, PLACES) == derive_movements(ROUND, PLACES)


def test_the_first_position_says_where_the_vehicle_is_not_what_it_crossed() -> None:
    assert derive_movements(standing(0, DEPOT, 2), PLACES) == []
    assert derive_movements([pos(0, FACILITY), pos(30, FACILITY)], PLACES) == []


def test_a_boundary_counts_as_inside() -> None:
    on_the_fence = (121.401, 31.200)
    assert derive_movements([pos(0, on_the_fence), pos(30, (121.41, 31.2))], PLACES) == [
        DepotDeparture(PLATE, "DEPOT-1", at(30))
    ]


def test_a_stop_shorter_than_two_minutes_is_traffic() -> None:
    red_light = [pos(0, (121.43, 31.2)), *standing(30, ROAD, 4), pos(150, (121.48, 31.2))]  # 90 s
    assert derive_movements(red_light, PLACES) == []
    two_minutes = [pos(0, (121.43, 31.2)), *standing(30, ROAD, 5), pos(180, (121.48, 31.2))]
    assert derive_movements(two_minutes, PLACES) == [Stop(PLATE, at(30), at(150), *ROAD)]


def test_a_stop_under_way_at_the_last_position_has_no_end() -> None:
    assert derive_movements([pos(0, (121.43, 31.2)), *standing(30, ROAD, 10)], PLACES) == [
        Stop(PLATE, at(30), None, *ROAD)
    ]


def test_crawling_below_the_stop_speed_is_standing_and_the_speed_is_a_setting() -> None:
    crawl = [pos(i * 30, ROAD, 2.9) for i in range(6)]
    assert [type(m) for m in derive_movements(crawl, PLACES)] == [Stop]
    assert derive_movements(crawl, PLACES, stop_speed_kmh=2.0) == []
    assert derive_movements(crawl, PLACES, min_stop=timedelta(minutes=3)) == []


def test_positions_without_a_fix_are_skipped() -> None:
    lost = [pos(0, DEPOT, 0.0), pos(30, (float("nan"), float("nan"))), pos(60, (121.42, 31.2))]
    assert derive_movements(lost, PLACES) == [DepotDeparture(PLATE, "DEPOT-1", at(60))]


def test_each_vehicle_is_followed_on_its_own() -> None:
    other = "沪A20002"
    positions = [pos(0, DEPOT), pos(0, ROAD, plate=other), pos(30, ROAD), pos(30, DEPOT, plate=other)]
    assert derive_movements(positions, PLACES) == [
        DepotDeparture(PLATE, "DEPOT-1", at(30)),
        DepotReturn(other, "DEPOT-1", at(30)),
    ]


def test_no_positions_and_no_places_move_nothing() -> None:
    assert derive_movements([], PLACES) == []
    assert derive_movements([pos(0, ROAD), pos(30, DEPOT)], Places({}, {})) == []


def test_settings_and_places_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="stop speed"):
        derive_movements([], PLACES, stop_speed_kmh=-1.0)
    with pytest.raises(ValueError, match="min_stop"):
        derive_movements([], PLACES, min_stop=timedelta(seconds=-1))
    bow_tie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    with pytest.raises(ValueError, match="DEPOT-X"):
        Places({"DEPOT-X": bow_tie}, {})
    with pytest.raises(ValueError, match="time zone"):
        Position(PLATE, datetime(2026, 12, 1, 5, 0), *ROAD, 0.0)


def test_a_loaded_vehicle_standing_on_the_road_is_found_from_its_positions() -> None:
    vehicles = {PLATE: Vehicle(PLATE, VehicleType.COLLECTION, Stream.FOOD, "DEPOT-1")}
    facilities = {"F-FOOD": Facility("F-FOOD", FacilityKind.FOOD_WASTE_TREATMENT, frozenset({Stream.FOOD}))}
    pickups = [Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, 400.0, at(200))]
    weighings = [Weighing(PLATE, "F-FOOD", 8_390.0, 8_000.0, at(1_300))]
    trips = assemble_trips(pickups, weighings, derive_movements(ROUND, PLACES))
    assert [(t.started_at, t.facility, t.arrivals[0].at) for t in trips] == [(at(90), "F-FOOD", at(1_230))]
    found = check_trips(trips, vehicles, facilities, now=at(2_000))
    assert [(v.kind, v.at) for v in found] == [(ViolationKind.UNLOADED_AT_UNREGISTERED_PLACE, at(450))]


def test_a_track_read_in_pieces_each_going_on_from_the_state_before_gives_the_movements_of_the_whole() -> (
    None
):
    whole = derive_movements(ROUND, PLACES)
    for cut in range(1, len(ROUND)):
        head = derive_track(ROUND[:cut], PLACES)
        tail = derive_track(ROUND[cut:], PLACES, states=head.states)
        # What the head reported under way, the tail reports again with its end: same identity.
        pieces = {(type(m), m.at): m for m in head.movements} | {(type(m), m.at): m for m in tail.movements}
        assert sorted(pieces.values(), key=lambda m: m.at) == whole, cut
        assert tail.states == derive_track(ROUND, PLACES).states, cut


def test_positions_not_after_the_state_are_not_read_again() -> None:
    head = derive_track(ROUND[:10], PLACES)
    again = derive_track(ROUND[:10], PLACES, states=head.states)
    assert (again.movements, again.states) == ([], head.states)


def test_a_derivation_started_at_any_resume_point_agrees_with_the_whole_after_it() -> None:
    whole = derive_movements(ROUND, PLACES)
    points = resume_points(ROUND, PLACES)
    assert any(points)
    assert not all(points)
    for index, is_point in enumerate(points):
        if is_point:
            after = [m for m in whole if m.at > ROUND[index].at]
            assert derive_movements(ROUND[index:], PLACES) == after, index


def test_the_state_says_where_the_last_position_was_and_the_stop_under_way() -> None:
    parked = derive_track(standing(0, DEPOT, 3), PLACES).states[PLATE]
    assert (parked.at, parked.depots, parked.registered, parked.stop) == (
        at(60),
        frozenset({"DEPOT-1"}),
        True,
        None,
    )
    road = standing(0, ROAD, 3)
    standing_there = derive_track(road, PLACES).states[PLATE]
    assert (standing_there.depots, standing_there.registered, standing_there.stop) == (
        frozenset(),
        False,
        (road[0], road[-1]),
    )
    assert not standing_there.stop_reported(timedelta(minutes=2))
    assert standing_there.stop_reported(timedelta(minutes=1))
    lost = [pos(0, (float("nan"), float("nan")))]
    assert resume_points(lost, PLACES) == [False]


def test_a_circle_is_its_radius_in_metres_both_ways_at_the_citys_latitude() -> None:
    lon, lat = 113.26, 23.13
    place = circle(lon, lat, 100.0)
    metres_per_degree_lon = 111_320.0 * math.cos(math.radians(lat))
    assert place.contains(shapely.Point(lon + 95 / metres_per_degree_lon, lat))
    assert not place.contains(shapely.Point(lon + 105 / metres_per_degree_lon, lat))
    assert place.contains(shapely.Point(lon, lat + 95 / 110_574.0))
    assert not place.contains(shapely.Point(lon, lat + 105 / 110_574.0))
    for radius in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            circle(lon, lat, radius)
    with pytest.raises(ValueError, match="lon/lat"):
        circle(200.0, lat, 100.0)
