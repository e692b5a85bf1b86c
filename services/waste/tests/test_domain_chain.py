"""Trips assembled from the chain's records: from the depot or the previous unloading to the next
unloading, whatever order the records come in, resent or not, with ids every replica agrees on."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.waste.domain.chain import (
    CITY_TIMEZONE,
    DepotDeparture,
    DepotReturn,
    FacilityArrival,
    Pickup,
    Stop,
    Stream,
    Trip,
    TripEnd,
    TripStart,
    Weighing,
    assemble_trips,
    distinct_pickups,
    distinct_weighings,
    instant,
    trip_id,
)

PLATE = "沪A10001"
OTHER_PLATE = "沪A10002"
T0 = datetime(2026, 12, 1, 5, 0, tzinfo=CITY_TIMEZONE)  # a Tuesday, as the morning round starts


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pickup(
    minutes: float,
    point: str = "HP-0001",
    tag: str | None = None,
    *,
    kg: float = 100.0,
    stream: Stream = Stream.FOOD,
    plate: str = PLATE,
) -> Pickup:
    return Pickup(plate, point, tag or f"BIN-{point}-{minutes:g}", stream, kg, at(minutes))


def weighing(minutes: float, *, net: float = 300.0, facility: str = "F-FOOD", plate: str = PLATE) -> Weighing:
    return Weighing(plate, facility, gross_kg=8_000.0 + net, tare_kg=8_000.0, at=at(minutes))


def departure(minutes: float, plate: str = PLATE) -> DepotDeparture:
    return DepotDeparture(plate, "DEPOT-1", at(minutes))


def back(minutes: float, plate: str = PLATE) -> DepotReturn:
    return DepotReturn(plate, "DEPOT-1", at(minutes))


def assemble(*records: object) -> list[Trip]:
    pickups = [r for r in records if isinstance(r, Pickup)]
    weighings = [r for r in records if isinstance(r, Weighing)]
    movements = [r for r in records if isinstance(r, DepotDeparture | DepotReturn | FacilityArrival | Stop)]
    return assemble_trips(pickups, weighings, movements)


MORNING = (
    departure(0),
    pickup(10, "HP-0001", "BIN-1", kg=120),
    pickup(12, "HP-0001", "BIN-2", kg=80),
    pickup(25, "HP-0002", "BIN-3", kg=110),
    FacilityArrival(PLATE, "F-FOOD", at(50)),
    weighing(55, net=305),
    pickup(70, "HP-0003", "BIN-4", kg=90),
    weighing(100, net=95),
    back(120),
)


def test_the_pickups_between_leaving_the_depot_and_the_weighbridge_form_one_trip() -> None:
    trip = assemble(*MORNING[:6])[0]
    assert trip.start is TripStart.DEPOT
    assert trip.started_at == at(0)
    assert trip.end is TripEnd.UNLOADED
    assert trip.ended_at == at(55)
    assert trip.points == ("HP-0001", "HP-0002")
    assert trip.picked_up_kg == pytest.approx(310.0)
    assert trip.delivered_kg == pytest.approx(305.0)
    assert trip.facility == "F-FOOD"
    assert trip.loaded_at == at(10)
    assert [a.facility for a in trip.arrivals] == ["F-FOOD"]


def test_an_unloading_ends_one_trip_and_starts_the_next() -> None:
    first, second = assemble(*MORNING)
    assert (second.start, second.started_at) == (TripStart.UNLOADING, at(55))
    assert second.id == trip_id(PLATE, at(55))
    assert [p.tag for p in second.pickups] == ["BIN-4"]
    assert second.end is TripEnd.UNLOADED
    assert second.delivered_kg == pytest.approx(95.0)
    assert first.id != second.id


def test_an_empty_vehicle_back_at_the_depot_after_its_last_unloading_makes_no_trip() -> None:
    assert len(assemble(*MORNING)) == 2


def test_records_in_any_order_give_the_same_trips() -> None:
    expected = assemble(*MORNING)
    for seed in range(5):
        shuffled = list(MORNING)
        random.Random(seed).shuffle(shuffled)
        assert assemble(*shuffled) == expected
    assert assemble(*reversed(MORNING)) == expected


def test_a_record_sent_twice_counts_once() -> None:
    assert assemble(*MORNING, *MORNING, pickup(10, "HP-0001", "BIN-1", kg=120)) == assemble(*MORNING)


def test_one_lift_resent_with_another_weight_is_kept_once_whichever_came_first() -> None:
    light, heavy = pickup(10, "HP-0001", "BIN-1", kg=100), pickup(10, "HP-0001", "BIN-1", kg=140)
    one = assemble(departure(0), light, heavy, weighing(30))
    other = assemble(departure(0), heavy, light, weighing(30))
    assert one == other
    assert len(one[0].pickups) == 1


def test_the_same_bin_lifted_again_later_is_a_second_pickup() -> None:
    trip = assemble(departure(0), pickup(10, tag="BIN-1"), pickup(11, tag="BIN-1"), weighing(30))[0]
    assert len(trip.pickups) == 2
    assert trip.points == ("HP-0001",)


def test_a_trip_id_depends_on_the_vehicle_and_the_start_alone() -> None:
    same_instant = at(0).astimezone(UTC)
    assert trip_id(PLATE, at(0)) == trip_id(PLATE, same_instant)
    assert trip_id(PLATE, at(0)) != trip_id(OTHER_PLATE, at(0))
    assert trip_id(PLATE, at(0)) != trip_id(PLATE, at(0) + timedelta(microseconds=1))
    assert trip_id(PLATE, at(0)).version == 5
    assert trip_id(PLATE, at(0)) == uuid.UUID(str(trip_id(PLATE, at(0))))


def test_a_trip_id_needs_a_moment_with_its_time_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        trip_id(PLATE, datetime(2026, 12, 1, 5, 0))


def test_a_trip_under_way_is_open_and_keeps_its_id_when_it_is_unloaded() -> None:
    (under_way,) = assemble(*MORNING[:3])
    assert (under_way.end, under_way.ended_at, under_way.unloading) == (TripEnd.OPEN, None, None)
    assert under_way.delivered_kg is None
    assert under_way.facility is None
    closed = assemble(*MORNING)[0]
    assert closed.id == under_way.id


def test_an_empty_vehicle_on_the_road_has_made_no_trip_yet() -> None:
    assert assemble(departure(0)) == []
    assert assemble(departure(0), FacilityArrival(PLATE, "F-FOOD", at(5))) == []
    assert assemble(departure(0), pickup(5), weighing(30), Stop(PLATE, at(40), at(60), 121.5, 31.2)) == [
        assemble(departure(0), pickup(5), weighing(30))[0]
    ]


def test_no_records_make_no_trips() -> None:
    assert assemble_trips([], [], []) == []
    assert assemble_trips([], []) == []


def test_a_loaded_vehicle_back_at_the_depot_ends_its_trip_without_an_unloading() -> None:
    (trip,) = assemble(departure(0), pickup(10), pickup(20, "HP-0002"), back(90))
    assert (trip.end, trip.ended_at, trip.unloading) == (TripEnd.RETURNED_TO_DEPOT, at(90), None)
    assert trip.delivered_kg is None


def test_a_loaded_vehicle_seen_leaving_the_depot_again_still_carries_its_first_load() -> None:
    # Its return was not seen: the load it left with is the one it took on before.
    (trip,) = assemble(departure(0), pickup(10), departure(60), pickup(70, "HP-0002"), weighing(100))
    assert trip.started_at == at(0)
    assert trip.points == ("HP-0001", "HP-0002")


def test_an_empty_vehicle_leaving_the_depot_again_starts_its_trip_then() -> None:
    (trip,) = assemble(departure(0), departure(60), pickup(70), weighing(100))
    assert (trip.start, trip.started_at) == (TripStart.DEPOT, at(60))


def test_a_weighing_first_in_the_records_only_starts_the_next_trip() -> None:
    # Its own load was taken on before the records given.
    (trip,) = assemble(weighing(0), pickup(10), weighing(40))
    assert (trip.start, trip.started_at, trip.ended_at) == (TripStart.UNLOADING, at(0), at(40))


def test_a_weighing_after_an_empty_return_to_the_depot_starts_the_next_trip() -> None:
    trips = assemble(departure(0), back(10), weighing(20), pickup(30), weighing(60))
    assert [(t.start, t.started_at) for t in trips] == [(TripStart.UNLOADING, at(20))]


def test_pickups_without_a_departure_seen_start_the_trip_at_the_first_pickup() -> None:
    (trip,) = assemble(pickup(10), pickup(20, "HP-0002"), weighing(40))
    assert (trip.start, trip.started_at) == (TripStart.FIRST_PICKUP, at(10))
    (after_return,) = assemble(departure(0), back(5), pickup(10), weighing(40))
    assert after_return.start is TripStart.FIRST_PICKUP


def test_a_departure_then_an_unloading_without_pickups_is_a_trip_without_pickups() -> None:
    (trip,) = assemble(departure(0), weighing(40, net=2_000))
    assert trip.pickups == ()
    assert trip.points == ()
    assert trip.picked_up_kg == 0
    assert trip.loaded_at is None
    assert trip.delivered_kg == pytest.approx(2_000.0)


def test_a_pickup_at_the_moment_of_an_unloading_belongs_to_the_next_trip() -> None:
    first, second = assemble(departure(0), pickup(10), pickup(30, "HP-0002"), weighing(30), weighing(60))
    assert first.points == ("HP-0001",)
    assert second.points == ("HP-0002",)


def test_a_pickup_at_the_moment_of_the_departure_belongs_to_the_trip_it_starts() -> None:
    (trip,) = assemble(departure(0), pickup(0), weighing(30))
    assert (trip.start, len(trip.pickups)) == (TripStart.DEPOT, 1)


def test_each_vehicle_has_its_own_trips_in_plate_then_time_order() -> None:
    trips = assemble(
        departure(0, OTHER_PLATE),
        pickup(5, plate=OTHER_PLATE),
        departure(1),
        pickup(6),
        weighing(40, plate=OTHER_PLATE),
        weighing(45),
    )
    assert [(t.plate, t.started_at, len(t.pickups)) for t in trips] == [
        (PLATE, at(1), 1),
        (OTHER_PLATE, at(0), 1),
    ]


def test_stops_and_arrivals_belong_to_the_trip_under_way() -> None:
    stop = Stop(PLATE, at(30), at(45), 121.49, 31.23)
    (trip,) = assemble(
        Stop(PLATE, at(-30), at(-10), 121.48, 31.22),  # before any trip: the vehicle was empty
        departure(0),
        pickup(10),
        stop,
        FacilityArrival(PLATE, "F-FOOD", at(50)),
        weighing(55),
    )
    assert trip.stops == (stop,)
    assert [a.at for a in trip.arrivals] == [at(50)]


def test_a_stop_reported_under_way_and_then_ended_is_kept_once_as_ended() -> None:
    under_way = Stop(PLATE, at(30), None, 121.49, 31.23)
    ended = Stop(PLATE, at(30), at(50), 121.49, 31.23)
    for order in ((under_way, ended), (ended, under_way)):
        (trip,) = assemble(departure(0), pickup(10), *order)
        assert trip.stops == (ended,)


def test_a_trip_can_run_past_midnight() -> None:
    night = T0.replace(hour=23, minute=30)
    trips = assemble_trips(
        [Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, 50.0, night + timedelta(minutes=10))],
        [Weighing(PLATE, "F-FOOD", 8_050.0, 8_000.0, night + timedelta(hours=1))],
        [DepotDeparture(PLATE, "DEPOT-1", night)],
    )
    assert [(t.started_at.day, t.ended_at and t.ended_at.day) for t in trips] == [(1, 2)]


def test_distinct_records_come_back_in_time_order_each_once() -> None:
    assert distinct_pickups([pickup(20), pickup(10), pickup(20)]) == [pickup(10), pickup(20)]
    assert distinct_weighings([weighing(20), weighing(10), weighing(10)]) == [weighing(10), weighing(20)]


def test_a_moment_is_the_same_text_in_any_zone() -> None:
    assert instant(at(0)) == instant(at(0).astimezone(UTC)) == "2026-11-30T21:00:00.000000+00:00"


def test_net_is_gross_less_tare_and_may_be_zero() -> None:
    assert Weighing(PLATE, "F-FOOD", 12_500.0, 8_200.0, T0).net_kg == pytest.approx(4_300.0)
    assert Weighing(PLATE, "F-FOOD", 8_200.0, 8_200.0, T0).net_kg == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, -1.0, T0),
        lambda: Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, float("nan"), T0),
        lambda: Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, float("inf"), T0),
        lambda: Pickup(PLATE, "HP-0001", "BIN-1", Stream.FOOD, 1.0, T0.replace(tzinfo=None)),
        lambda: Weighing(PLATE, "F-FOOD", 8_000.0, 8_000.1, T0),
        lambda: Weighing(PLATE, "F-FOOD", -1.0, 0.0, T0),
        lambda: Weighing(PLATE, "F-FOOD", 9_000.0, 8_000.0, T0.replace(tzinfo=None)),
        lambda: DepotDeparture(PLATE, "DEPOT-1", T0.replace(tzinfo=None)),
        lambda: DepotReturn(PLATE, "DEPOT-1", T0.replace(tzinfo=None)),
        lambda: FacilityArrival(PLATE, "F-FOOD", T0.replace(tzinfo=None)),
        lambda: Stop(PLATE, T0, T0 - timedelta(seconds=1), 121.5, 31.2),
        lambda: Stop(PLATE, T0, T0.replace(tzinfo=None), 121.5, 31.2),
    ],
)
def test_records_that_cannot_be_true_are_refused(make) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        make()


def test_two_weighings_of_one_vehicle_at_one_instant_give_trips_of_distinct_ids() -> None:
    """Two facilities' records of the same second (or one record sent under two codes) must not make
    an empty trip that starts and ends there: it would share the next trip's id."""
    trips = assemble(
        departure(0),
        pickup(10, "HP-0001"),
        weighing(60, facility="F-FOOD"),
        weighing(60, facility="T-1"),
        pickup(70, "HP-0002"),
        weighing(120),
    )
    assert len({trip.id for trip in trips}) == len(trips) == 2
    assert [trip.started_at for trip in trips] == [at(0), at(60)]
    assert trips[1].points == ("HP-0002",)


@pytest.mark.parametrize("seed", range(20))
def test_trip_ids_are_unique_whatever_the_records(seed: int) -> None:
    """Records of few distinct instants, in any mix, never give two trips one id."""
    rng = random.Random(seed)
    records: list[object] = []
    for _ in range(40):
        minute = rng.randrange(0, 12) * 10
        match rng.randrange(4):
            case 0:
                records.append(pickup(minute, f"HP-000{rng.randrange(5)}"))
            case 1:
                records.append(weighing(minute, facility=rng.choice(["F-FOOD", "T-1", "F-BURN"])))
            case 2:
                records.append(departure(minute))
            case _:
                records.append(back(minute))
    trips = assemble(*records)
    assert len({trip.id for trip in trips}) == len(trips)
