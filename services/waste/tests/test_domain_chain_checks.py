"""The checks over trips: mixed loads, weights off the weighbridge, trips never unloaded, loaded
vehicles standing outside every registered place; at their boundaries, each found once."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from contract.waste import WasteViolation
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
    Trip,
    Vehicle,
    VehicleType,
    Weighing,
    assemble_trips,
)
from services.waste.domain.chain_checks import (
    DEFAULT_CHECKS,
    CheckSettings,
    ViolationKind,
    check_trips,
    mixed_loads,
    unfinished_trips,
    unregistered_unloadings,
    weight_mismatch,
    weight_mismatches,
)

K = ViolationKind
PLATE = "沪A10001"
T0 = datetime(2026, 12, 1, 5, 0, tzinfo=CITY_TIMEZONE)

VEHICLES = {
    PLATE: Vehicle(PLATE, VehicleType.COLLECTION, Stream.FOOD, "DEPOT-1"),
    "沪A20002": Vehicle("沪A20002", VehicleType.COLLECTION, Stream.RECYCLABLE, "DEPOT-1"),
}
FACILITIES = {
    "F-FOOD": Facility(
        "F-FOOD", FacilityKind.FOOD_WASTE_TREATMENT, frozenset({Stream.FOOD}), frozenset({"WB-1"})
    ),
    "F-BURN": Facility("F-BURN", FacilityKind.INCINERATION, frozenset({Stream.OTHER})),
    "T-1": Facility("T-1", FacilityKind.TRANSFER_STATION, frozenset({Stream.FOOD, Stream.OTHER})),
    "CLOSED": Facility("CLOSED", FacilityKind.LANDFILL, frozenset()),
}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pickup(
    minutes: float, tag: str, *, kg: float = 100.0, stream: Stream = Stream.FOOD, point: str = "HP-0001"
):
    return Pickup(PLATE, point, tag, stream, kg, at(minutes))


def weighing(minutes: float, net: float, facility: str = "F-FOOD") -> Weighing:
    return Weighing(PLATE, facility, 8_000.0 + net, 8_000.0, at(minutes))


def trips(*records: object) -> list[Trip]:
    return assemble_trips(
        [r for r in records if isinstance(r, Pickup)],
        [r for r in records if isinstance(r, Weighing)],
        [r for r in records if isinstance(r, DepotDeparture | DepotReturn | FacilityArrival | Stop)],
    )


def depart() -> DepotDeparture:
    return DepotDeparture(PLATE, "DEPOT-1", at(0))


def stop(start: float, end: float | None) -> Stop:
    return Stop(PLATE, at(start), None if end is None else at(end), 121.487654, 31.234567)


def test_the_kinds_the_contract_knows_keep_its_values() -> None:
    assert K.MIXED_LOAD.value == WasteViolation.MIXED_LOAD.value
    assert K.MISSED_COLLECTION.value == WasteViolation.MISSED_COLLECTION.value


# -- mixed loads ---------------------------------------------------------------------------------------


def test_loads_are_judged_by_the_vehicles_stream_when_it_lifted_them_not_the_registers_now() -> None:
    """The register corrects a vehicle's stream; its earlier trips, assembled again after a late
    record, must not turn into one mixed load per bin."""
    lifted = Pickup(PLATE, "HP-0001", "BIN-1", Stream.OTHER, 100.0, at(10), load_stream=Stream.OTHER)
    unloaded = Weighing(PLATE, "F-BURN", 8_100.0, 8_000.0, at(60), load_stream=Stream.OTHER)
    assembled = assemble_trips([lifted], [unloaded], [depart()])
    # VEHICLES has the plate as a food vehicle now.
    assert mixed_loads(assembled, VEHICLES, FACILITIES) == []
    # Without the stream it had, the register's is all there is.
    unknown = assemble_trips([Pickup(PLATE, "HP-0001", "BIN-1", Stream.OTHER, 100.0, at(10))], [], [depart()])
    assert [v.kind for v in mixed_loads(unknown, VEHICLES, FACILITIES)] == [K.MIXED_LOAD]


def test_a_food_vehicle_lifting_a_recyclable_bin_is_a_mixed_load_at_that_point() -> None:
    assembled = trips(
        depart(),
        pickup(10, "BIN-1"),
        pickup(12, "BIN-2", stream=Stream.RECYCLABLE, point="HP-0002"),
        weighing(40, 200),
    )
    (found,) = mixed_loads(assembled, VEHICLES, FACILITIES)
    assert (found.kind, found.plate, found.point, found.facility, found.at) == (
        K.MIXED_LOAD,
        PLATE,
        "HP-0002",
        None,
        at(12),
    )
    assert found.trip_id == assembled[0].id
    assert "recyclable bin BIN-2" in found.details
    assert found.dedup_key == f"mixed_load|{PLATE}|bin|BIN-2|2026-11-30T21:12:00.000000+00:00"


def test_every_bin_of_another_stream_is_its_own_violation() -> None:
    assembled = trips(
        depart(),
        pickup(10, "BIN-1", stream=Stream.OTHER),
        pickup(11, "BIN-2", stream=Stream.HAZARDOUS),
        pickup(12, "BIN-3"),
    )
    found = mixed_loads(assembled, VEHICLES, FACILITIES)
    assert [v.at for v in found] == [at(10), at(11)]
    assert len({v.dedup_key for v in found}) == 2


def test_a_vehicle_lifting_its_own_stream_and_unloading_where_it_is_accepted_is_clean() -> None:
    assert mixed_loads(trips(depart(), pickup(10, "BIN-1"), weighing(40, 100)), VEHICLES, FACILITIES) == []
    # A transfer station taking several streams takes the vehicle's.
    assert (
        mixed_loads(trips(depart(), pickup(10, "BIN-1"), weighing(40, 100, "T-1")), VEHICLES, FACILITIES)
        == []
    )


def test_unloading_at_a_facility_that_does_not_accept_the_vehicles_stream_is_a_mixed_load_there() -> None:
    assembled = trips(depart(), pickup(10, "BIN-1"), weighing(40, 100, "F-BURN"))
    (found,) = mixed_loads(assembled, VEHICLES, FACILITIES)
    assert (found.point, found.facility, found.at) == (None, "F-BURN", at(40))
    assert "accepts other" in found.details
    (closed,) = mixed_loads(
        trips(depart(), pickup(10, "BIN-1"), weighing(40, 100, "CLOSED")), VEHICLES, FACILITIES
    )
    assert "accepts nothing" in closed.details


def test_a_vehicle_or_a_facility_not_in_the_register_is_not_judged() -> None:
    assembled = trips(depart(), pickup(10, "BIN-1", stream=Stream.OTHER), weighing(40, 100, "NOWHERE"))
    assert [v.point for v in mixed_loads(assembled, VEHICLES, FACILITIES)] == ["HP-0001"]
    assert mixed_loads(assembled, {}, FACILITIES) == []


# -- weights -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picked", "net", "mismatch"),
    [
        (5_000.0, 5_000.0, False),
        (4_500.0, 5_000.0, False),  # 500 kg off a 5 t net: exactly 10 %, within
        (4_499.0, 5_000.0, True),
        (5_500.0, 5_000.0, False),
        (5_501.0, 5_000.0, True),
        (800.0, 1_000.0, False),  # 10 % would be 100 kg: the 200 kg floor applies
        (799.0, 1_000.0, True),
        (1_200.0, 1_000.0, False),
        (1_201.0, 1_000.0, True),
        (1_800.0, 2_000.0, False),  # where the two meet
        (1_799.0, 2_000.0, True),
        (200.0, 0.0, False),
        (201.0, 0.0, True),
        (0.0, 200.0, False),
    ],
)
def test_the_weighbridge_net_allows_ten_percent_or_200_kg_whichever_is_more(picked, net, mismatch) -> None:
    assert weight_mismatch(picked, net) is mismatch


def test_the_tolerance_and_the_floor_are_settings() -> None:
    strict = CheckSettings(weight_tolerance=0.05, weight_floor_kg=0.0)
    assert weight_mismatch(950.0, 1_000.0, strict) is False
    assert weight_mismatch(949.0, 1_000.0, strict) is True
    assert (
        weight_mismatch(5_000.0, 5_000.0, CheckSettings(weight_tolerance=0.0, weight_floor_kg=0.0)) is False
    )


def test_an_unloaded_trip_weighing_more_than_its_pickups_is_a_weight_mismatch_at_the_facility() -> None:
    assembled = trips(
        depart(), pickup(10, "BIN-1", kg=1_000), pickup(20, "BIN-2", kg=1_000), weighing(60, 3_000)
    )
    (found,) = weight_mismatches(assembled)
    assert (found.kind, found.facility, found.at, found.trip_id) == (
        K.WEIGHT_MISMATCH,
        "F-FOOD",
        at(60),
        assembled[0].id,
    )
    assert found.dedup_key == f"weight_mismatch|{PLATE}|F-FOOD|2026-11-30T22:00:00.000000+00:00"
    assert "picked up 2000 kg in 2 bins, weighed 3000 kg net (+33% of the net)" in found.details


def test_trips_without_pickups_or_not_yet_unloaded_are_not_weighed() -> None:
    assert weight_mismatches(trips(depart(), weighing(60, 3_000))) == []
    assert weight_mismatches(trips(depart(), pickup(10, "BIN-1", kg=5_000))) == []


def test_a_zero_net_against_heavy_pickups_is_a_mismatch_without_a_share() -> None:
    (found,) = weight_mismatches(trips(depart(), pickup(10, "BIN-1", kg=900), weighing(60, 0)))
    assert found.details == "picked up 900 kg in 1 bin, weighed 0 kg net"


# -- trips never unloaded ------------------------------------------------------------------------------


def test_a_loaded_vehicle_back_at_the_depot_never_unloaded_its_trip() -> None:
    assembled = trips(
        depart(),
        pickup(10, "BIN-1"),
        FacilityArrival(PLATE, "F-FOOD", at(50)),
        DepotReturn(PLATE, "DEPOT-1", at(90)),
    )
    (found,) = unfinished_trips(assembled, now=at(100))
    assert (found.kind, found.at, found.plate) == (K.TRIP_NOT_UNLOADED, at(90), PLATE)
    assert (
        found.details
        == "returned to the depot with 100 kg from 1 point; at F-FOOD without a weighbridge record"
    )
    assert found.dedup_key == f"trip_not_unloaded|{PLATE}|returned|2026-11-30T22:30:00.000000+00:00"


def test_a_trip_loaded_for_more_than_twelve_hours_is_found_at_the_twelfth_hour() -> None:
    assembled = trips(depart(), pickup(60, "BIN-1"))
    limit = at(60) + timedelta(hours=12)
    assert unfinished_trips(assembled, now=limit) == []
    (found,) = unfinished_trips(assembled, now=limit + timedelta(seconds=1))
    assert found.at == limit
    assert found.details == "loaded for more than 12 h without unloading"
    # Found again later, it is the same violation.
    assert unfinished_trips(assembled, now=limit + timedelta(hours=5)) == [found]


def test_the_open_trip_limit_counts_from_the_first_pickup_not_the_departure() -> None:
    assembled = trips(depart(), pickup(6 * 60, "BIN-1"))
    assert unfinished_trips(assembled, now=at(13 * 60)) == []
    short = CheckSettings(open_trip_limit=timedelta(hours=2, minutes=30))
    (found,) = unfinished_trips(assembled, now=at(9 * 60), settings=short)
    assert "2 h 30 min" in found.details


def test_an_unloaded_trip_is_never_unfinished() -> None:
    assert unfinished_trips(trips(depart(), pickup(10, "BIN-1"), weighing(60, 100)), now=at(48 * 60)) == []


def test_a_trip_overdue_and_then_back_at_the_depot_keeps_one_key() -> None:
    overdue = unfinished_trips(trips(depart(), pickup(10, "BIN-1")), now=at(14 * 60))
    returned = unfinished_trips(
        trips(depart(), pickup(10, "BIN-1"), DepotReturn(PLATE, "DEPOT-1", at(15 * 60))), now=at(16 * 60)
    )
    assert [v.dedup_key for v in overdue] == [v.dedup_key for v in returned]


def test_a_late_record_that_moves_a_trips_start_keeps_its_violations_keys() -> None:
    """A departure sent late gives the trip another start and id; what it did wrong stays one violation."""
    records = (pickup(10, "BIN-1", kg=1_000), weighing(60, 3_000))
    before = trips(*records)
    after = trips(depart(), *records)
    assert before[0].id != after[0].id
    assert [v.dedup_key for v in weight_mismatches(before)] == [v.dedup_key for v in weight_mismatches(after)]
    never = (pickup(10, "BIN-1"), DepotReturn(PLATE, "DEPOT-1", at(90)))
    assert [v.dedup_key for v in unfinished_trips(trips(*never), now=at(100))] == [
        v.dedup_key for v in unfinished_trips(trips(depart(), *never), now=at(100))
    ]
    # A bin lifted before the first, sent late, moves the load's start, not its return.
    assert [v.dedup_key for v in unfinished_trips(trips(*never), now=at(100))] == [
        v.dedup_key for v in unfinished_trips(trips(pickup(5, "BIN-0"), *never), now=at(100))
    ]


# -- unloading at an unregistered place ----------------------------------------------------------------


def test_a_loaded_vehicle_standing_ten_minutes_outside_every_registered_place_is_found() -> None:
    assembled = trips(depart(), pickup(10, "BIN-1"), stop(20, 30), weighing(60, 100))
    (found,) = unregistered_unloadings(assembled, now=at(90))
    assert (found.kind, found.at, found.point, found.facility) == (
        K.UNLOADED_AT_UNREGISTERED_PLACE,
        at(20),
        None,
        None,
    )
    assert (
        found.details == "stopped loaded for 10 min at 121.487654, 31.234567, outside every registered place"
    )
    assert found.dedup_key == f"unloaded_at_unregistered_place|{PLATE}|2026-11-30T21:20:00.000000+00:00"


def test_a_stop_just_under_the_limit_is_not_found() -> None:
    short = Stop(PLATE, at(20), at(30) - timedelta(seconds=1), 121.48, 31.23)
    assert unregistered_unloadings(trips(depart(), pickup(10, "BIN-1"), short), now=at(90)) == []


def test_a_stop_before_the_first_pickup_is_of_an_empty_vehicle() -> None:
    assert unregistered_unloadings(trips(depart(), stop(2, 40), pickup(50, "BIN-1")), now=at(90)) == []


def test_a_stop_still_under_way_is_judged_after_the_limit_and_its_grace() -> None:
    """Its end may be in the platform's next upload: judged only 20 minutes after the stop limit."""
    assembled = trips(depart(), pickup(10, "BIN-1"), stop(20, None))
    assert unregistered_unloadings(assembled, now=at(49)) == []
    (found,) = unregistered_unloadings(assembled, now=at(50))
    assert found.details.endswith("outside every registered place and still there")
    assert "for 30 min" in found.details
    prompt = CheckSettings(open_stop_grace=timedelta(0))
    assert len(unregistered_unloadings(assembled, now=at(30), settings=prompt)) == 1
    # Once it ends, it is the same violation.
    ended = trips(depart(), pickup(10, "BIN-1"), stop(20, 45))
    assert [v.dedup_key for v in unregistered_unloadings(ended, now=at(90))] == [found.dedup_key]


def test_a_stop_without_its_end_ended_at_the_vehicles_next_record() -> None:
    """The end of a stop lost with an upload: the next lift shows the vehicle moved on."""
    moved_on = trips(depart(), pickup(10, "BIN-1"), stop(20, None), pickup(25, "BIN-2"))
    assert unregistered_unloadings(moved_on, now=at(600)) == []
    long_gone = trips(depart(), pickup(10, "BIN-1"), stop(20, None), pickup(45, "BIN-2"))
    (found,) = unregistered_unloadings(long_gone, now=at(600))
    assert "for 25 min" in found.details
    assert "still there" not in found.details


def test_the_stop_limit_is_a_setting() -> None:
    assembled = trips(depart(), pickup(10, "BIN-1"), stop(20, 25))
    assert unregistered_unloadings(assembled, now=at(90)) == []
    (found,) = unregistered_unloadings(
        assembled, now=at(90), settings=CheckSettings(stop_limit=timedelta(minutes=5))
    )
    assert "5 min" in found.details


# -- all together --------------------------------------------------------------------------------------


def messy_day() -> list[object]:
    return [
        depart(),
        pickup(10, "BIN-1", kg=1_000),
        pickup(15, "BIN-2", kg=1_000, stream=Stream.OTHER),
        stop(20, 40),
        weighing(60, 4_000, "F-BURN"),
        pickup(70, "BIN-3", kg=300),
        DepotReturn(PLATE, "DEPOT-1", at(120)),
    ]


def test_every_check_over_a_day_in_time_order() -> None:
    found = check_trips(trips(*messy_day()), VEHICLES, FACILITIES, now=at(180))
    assert [(v.kind, v.at) for v in found] == [
        (K.MIXED_LOAD, at(15)),
        (K.UNLOADED_AT_UNREGISTERED_PLACE, at(20)),
        (K.MIXED_LOAD, at(60)),
        (K.WEIGHT_MISMATCH, at(60)),
        (K.TRIP_NOT_UNLOADED, at(120)),
    ]


def test_every_violation_of_a_registered_vehicle_carries_its_loads_stream() -> None:
    found = check_trips(trips(*messy_day()), VEHICLES, FACILITIES, now=at(180))
    assert {v.stream for v in found} == {Stream.FOOD}
    assert {v.stream for v in check_trips(trips(*messy_day()), {}, FACILITIES, now=at(180))} == {None}


def test_the_checks_find_the_same_violations_whatever_the_records_order_and_repeats() -> None:
    expected = check_trips(trips(*messy_day()), VEHICLES, FACILITIES, now=at(180))
    records = messy_day() * 2
    random.Random(7).shuffle(records)
    assembled = trips(*records)
    assert check_trips(assembled + assembled, VEHICLES, FACILITIES, now=at(180)) == expected


def test_no_trips_find_nothing() -> None:
    assert check_trips([], VEHICLES, FACILITIES, now=T0) == []


def test_the_default_settings_are_ten_percent_200_kg_twelve_hours_and_ten_minutes() -> None:
    assert (
        DEFAULT_CHECKS.weight_tolerance,
        DEFAULT_CHECKS.weight_floor_kg,
        DEFAULT_CHECKS.open_trip_limit,
        DEFAULT_CHECKS.stop_limit,
    ) == (0.10, 200.0, timedelta(hours=12), timedelta(minutes=10))


@pytest.mark.parametrize(
    "changes",
    [
        {"weight_tolerance": 1.0},
        {"weight_tolerance": -0.01},
        {"weight_tolerance": float("nan")},
        {"weight_floor_kg": -1.0},
        {"weight_floor_kg": float("inf")},
        {"open_trip_limit": timedelta(0)},
        {"stop_limit": timedelta(minutes=-1)},
    ],
)
def test_settings_that_make_no_sense_are_refused(changes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        CheckSettings(**changes)
