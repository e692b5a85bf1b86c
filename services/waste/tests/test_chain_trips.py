"""The chain round on real PostgreSQL and NATS: a day's trips assembled from the records and
reconciled to the weighbridge; each violation the checks find recorded and published once, however
many replicas run the round and however often the records arrive; missed collections after their
window."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.settings import to_libpq_url
from citygrid.testing import stream_events
from services.waste.chain.jobs import ChainPart
from services.waste.chain.rounds import ChainRound
from services.waste.domain.chain import CITY_TIMEZONE
from services.waste.domain.chain_checks import CheckSettings
from services.waste.tests.conftest import READER, Waste
from services.waste.tests.test_chain_intake import (
    FOOD_PLANT,
    FOOD_TRUCK,
    INCINERATOR,
    NOW,
    OTHER_TRUCK,
    RECYCLING_TRUCK,
    lift,
    register,
    report,
    weighed,
)

BASE = NOW - timedelta(hours=5)


def chain_of(waste: Waste) -> ChainPart:
    part: ChainPart = waste.app.state.chain
    return part


async def run_round(waste: Waste, times: int = 1) -> None:
    """Rounds that led: the service's own job may be in a round at the same moment, and a round that
    finds the cursor locked does nothing, so the test's is run again until it leads."""
    chain_round = chain_of(waste).round
    assert chain_round is not None
    for _ in range(times):
        for _attempt in range(100):
            await chain_round.round()
            if chain_round.last.leader:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no round led in five seconds")


def movement(kind: str, at: datetime, plate: str = FOOD_TRUCK, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "plate": plate, "at": at.isoformat(), **fields}


async def trips_of(waste: Waste, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    response = await waste.get(f"/v1/trips?{params}", scopes=READER)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def chain_violations(waste: Waste, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{key}={value}" for key, value in query.items())
    response = await waste.get(f"/v1/chain-violations?{params}", scopes=READER)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_days_trips_are_assembled_and_reconcile_to_the_weighbridge(waste: Waste):
    await register(waste)
    at = BASE
    await report(
        waste,
        "movements",
        movement("departed_depot", at, depot="DEPOT-1"),
        movement("returned_to_depot", at + timedelta(hours=2, minutes=30), depot="DEPOT-1"),
    )
    await report(
        waste,
        "pickups",
        lift(at + timedelta(minutes=10), "HP-0001", weight_kg=120.0),
        lift(at + timedelta(minutes=20), "HP-0002", weight_kg=130.0),
        lift(at + timedelta(minutes=30), "HP-0003", weight_kg=150.0),
        lift(at + timedelta(hours=1, minutes=10), "HP-0001", weight_kg=200.0),
        lift(at + timedelta(hours=1, minutes=20), "HP-0002", weight_kg=180.0),
    )
    await report(
        waste,
        "weighings",
        weighed(at + timedelta(hours=1), 10_400.0, 10_000.0),
        weighed(at + timedelta(hours=2), 10_390.0, 10_000.0, weighbridge="WB-2"),
    )
    await run_round(waste)

    second, first = await trips_of(waste, plate=FOOD_TRUCK)
    assert (first["start"], first["ending"], first["open"]) == ("depot", "unloaded", False)
    assert (second["start"], second["ending"]) == ("unloading", "unloaded")
    assert first["points"] == ["HP-0001", "HP-0002", "HP-0003"]
    assert (first["pickups"], first["picked_up_kg"], first["delivered_kg"]) == (3, 400.0, 400.0)
    assert (second["pickups"], second["picked_up_kg"], second["delivered_kg"]) == (2, 380.0, 390.0)
    assert {first["facility_code"], second["facility_code"]} == {FOOD_PLANT}
    # The day reconciles: what the weighbridge weighed is what the trips delivered.
    assert first["delivered_kg"] + second["delivered_kg"] == 790.0
    assert datetime.fromisoformat(first["started_at"]) == at
    assert first["started_at"].endswith("+08:00")

    detail = (await waste.get(f"/v1/trips/{first['id']}", scopes=READER)).json()
    assert [p["point_code"] for p in detail["pickup_records"]] == ["HP-0001", "HP-0002", "HP-0003"]
    assert {p["stream"] for p in detail["pickup_records"]} == {"food"}
    assert (detail["weighing"]["net_kg"], detail["weighing"]["weighbridge"]) == (400.0, "WB-1")
    assert detail["violations"] == []
    assert await chain_violations(waste) == []

    day = at.astimezone(CITY_TIMEZONE).date().isoformat()
    assert len(await trips_of(waste, day=day, facility=FOOD_PLANT)) == (
        2 if (at + timedelta(hours=1)).astimezone(CITY_TIMEZONE).date().isoformat() == day else 1
    )
    assert await trips_of(waste, open="true") == []
    page = await waste.get("/v1/trips?limit=1", scopes=READER)
    assert page.json()["items"][0]["id"] == second["id"]
    after = await waste.get(f"/v1/trips?limit=1&cursor={page.json()['next_cursor']}", scopes=READER)
    assert after.json()["items"][0]["id"] == first["id"]
    missing = await waste.get("/v1/trips/00000000-0000-0000-0000-000000000000", scopes=READER)
    assert (missing.status_code, missing.json()["code"]) == (404, "waste.unknown_trip")


async def test_a_mixed_load_is_one_violation_and_one_event_with_two_instances_running_the_round(
    waste_factory, waste_database: str
):
    async with waste_factory() as first, waste_factory() as second:
        await register(first)
        for instance in (first, second):
            part = chain_of(instance)
            assert part.round is not None
            # Each round may take the lease: the instances take turns, as after a crash.
            part.round.config = replace(part.round.config, lease=timedelta(0))
        # A food truck lifts a recyclable bin, then unloads at the food plant.
        await report(
            first,
            "pickups",
            lift(BASE, "HP-0001"),
            lift(BASE + timedelta(minutes=10), "HP-0002", stream="REC", weight_kg=60.0),
        )
        await report(second, "weighings", weighed(BASE + timedelta(hours=1), 10_180.0, 10_000.0))
        await asyncio.gather(run_round(first, 3), run_round(second, 3))
        # A lift of the same trip arrives late, at the other instance: the trip is assembled again.
        await report(second, "pickups", lift(BASE + timedelta(minutes=5), "HP-0003"))
        await asyncio.gather(run_round(first, 2), run_round(second, 2))

        (violation,) = await chain_violations(first)
        assert (violation["kind"], violation["point_code"], violation["plate"]) == (
            "mixed_load",
            "HP-0002",
            FOOD_TRUCK,
        )
        assert (violation["stream"], violation["category_code"]) == ("food", "20118")
        assert violation["location"] == {"type": "Point", "coordinates": [113.482, 23.11]}
        (trip,) = await trips_of(second, plate=FOOD_TRUCK)
        assert violation["trip_id"] == trip["id"]
        assert (trip["pickups"], trip["picked_up_kg"]) == (3, 300.0)

        (published,) = await stream_events(first.infrastructure.nats_url, "WASTE", at_least=1)
        await asyncio.sleep(1.0)  # a second event, if any, would be published by now
        assert len(await stream_events(first.infrastructure.nats_url, "WASTE", at_least=1)) == 1
        data = published.data
        assert published.type == "waste.violation.detected.v1"
        assert (data["reference"], data["kind"], data["vehicle_plate"], data["point_code"]) == (
            violation["id"],
            "mixed_load",
            FOOD_TRUCK,
            "HP-0002",
        )
        assert (data["trip_id"], data["category_code"], data["district_code"]) == (
            trip["id"],
            "20118",
            "440112",
        )
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        queued = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE subject = 'waste.violation.detected'"
        )
    finally:
        await connection.close()
    assert queued == 1


async def test_weights_off_loads_brought_back_stops_outside_and_open_trips_are_violations(waste: Waste):
    await register(waste)
    # The food truck's net is far above what its on-truck scale lifted.
    await report(
        waste,
        "pickups",
        *(lift(BASE + timedelta(minutes=10 * i), f"HP-000{i}") for i in (1, 2, 3)),
        lift(BASE, "HP-0001", stream="REC", plate=RECYCLING_TRUCK),
        lift(BASE + timedelta(minutes=10), "HP-0002", stream="REC", plate=RECYCLING_TRUCK),
        lift(NOW - timedelta(hours=13), "HP-0003", stream="OTH", plate=OTHER_TRUCK),
    )
    await report(waste, "weighings", weighed(BASE + timedelta(hours=1), 11_000.0, 10_000.0))
    # The recycling truck stands 15 minutes outside every registered place, then goes back loaded.
    stop_at = BASE + timedelta(minutes=30)
    await report(
        waste,
        "movements",
        movement(
            "stopped",
            stop_at,
            RECYCLING_TRUCK,
            ended_at=(stop_at + timedelta(minutes=15)).isoformat(),
            location={"type": "Point", "coordinates": [113.6, 23.3]},
        ),
        movement("returned_to_depot", BASE + timedelta(hours=1), RECYCLING_TRUCK, depot="DEPOT-1"),
    )
    await run_round(waste)

    found = {(v["kind"], v["plate"]): v for v in await chain_violations(waste)}
    assert set(found) == {
        ("trip_not_unloaded", OTHER_TRUCK),
        ("trip_not_unloaded", RECYCLING_TRUCK),
        ("unloaded_at_unregistered_place", RECYCLING_TRUCK),
        ("weight_mismatch", FOOD_TRUCK),
    }
    mismatch = found["weight_mismatch", FOOD_TRUCK]
    assert (mismatch["facility_code"], mismatch["location"]["coordinates"]) == (FOOD_PLANT, [113.52, 23.15])
    assert "picked up 360 kg in 3 bins, weighed 1000 kg net" in mismatch["detail"]
    stop = found["unloaded_at_unregistered_place", RECYCLING_TRUCK]
    assert (stop["location"]["coordinates"], stop["category_code"]) == ([113.6, 23.3], "20118")
    brought_back = found["trip_not_unloaded", RECYCLING_TRUCK]
    assert brought_back["location"]["coordinates"] == [113.482, 23.11]  # its last point, HP-0002
    (open_trip,) = await trips_of(waste, open="true")
    assert (open_trip["plate"], open_trip["ending"]) == (OTHER_TRUCK, "open")
    assert found["trip_not_unloaded", OTHER_TRUCK]["trip_id"] == open_trip["id"]
    only = await chain_violations(waste, kind="weight_mismatch")
    assert [v["plate"] for v in only] == [FOOD_TRUCK]

    await run_round(waste, 2)  # checked again: nothing new
    assert len(await chain_violations(waste)) == 4
    assert len(await stream_events(waste.infrastructure.nats_url, "WASTE", at_least=4)) == 4


def window_closed_past_its_grace() -> tuple[str, datetime, datetime]:
    """A two-hour window in city time that closed three hours ago (past the 2-hour grace for late
    pickups), and its opening and closing."""
    closes = (NOW.astimezone(CITY_TIMEZONE) - timedelta(hours=3)).replace(second=0)
    opens = closes - timedelta(hours=2)
    return f"{opens:%H:%M}-{closes:%H:%M}", opens, closes


async def test_a_point_on_the_route_without_a_lift_in_its_window_is_a_missed_collection(
    waste: Waste, waste_database: str
):
    await register(waste)
    window, opens, closes = window_closed_past_its_grace()
    route = {
        "code": "R-FOOD-1",
        "name": "Xiagang food round",
        "plate": FOOD_TRUCK,
        "district_code": "440112",
        "stream": "food",
        "days": [1, 2, 3, 4, 5, 6, 7],
        "time_window": window,
        "stops": ["HP-0001", "HP-0002"],
        "facility_code": FOOD_PLANT,
    }
    response = await waste.post("/v1/routes/import", {"routes": [route]})
    assert response.json()["refused"] == [], response.text
    await report(
        waste,
        "pickups",
        lift(closes - timedelta(minutes=30), "HP-0001"),
        # A recyclable bin lifted at the other point does not make its food round.
        lift(closes - timedelta(minutes=20), "HP-0002", stream="REC", plate=RECYCLING_TRUCK),
        lift(closes + timedelta(minutes=5), "HP-0002"),  # too late
    )
    await run_round(waste)
    # As if the service had been down since before the window closed (its first round was not).
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        await connection.execute("UPDATE chain_cursor SET missed_until = $1", closes - timedelta(minutes=90))
        # …and as if the route had been registered before the window opened (one registered during
        # its window is not judged on it).
        await connection.execute("UPDATE routes SET schedule_changed_at = $1", opens - timedelta(days=1))
    finally:
        await connection.close()
    await run_round(waste, 2)

    (missed,) = await chain_violations(waste, kind="missed_collection")
    assert (missed["point_code"], missed["plate"], missed["stream"]) == ("HP-0002", FOOD_TRUCK, "food")
    assert datetime.fromisoformat(missed["at"]) == closes
    assert missed["location"]["coordinates"] == [113.482, 23.11]
    events = await stream_events(waste.infrastructure.nats_url, "WASTE", at_least=1)
    assert [e.data["kind"] for e in events] == ["missed_collection"]

    coverage = await waste.get(f"/v1/figures/coverage?day={opens.date().isoformat()}", scopes=READER)
    assert coverage.status_code == 200, coverage.text
    body = coverage.json()
    assert (body["scheduled"], body["done"], body["rate"]) == (2, 1, 0.5)


async def test_a_facility_refusing_the_vehicles_stream_is_a_mixed_load_at_the_facility(waste: Waste):
    await register(waste)
    await report(waste, "pickups", lift(BASE, "HP-0001"))
    await report(
        waste, "weighings", weighed(BASE + timedelta(hours=1), 10_120.0, 10_000.0, facility_code=INCINERATOR)
    )
    await run_round(waste)
    (violation,) = await chain_violations(waste)
    assert (violation["kind"], violation["facility_code"], violation["point_code"]) == (
        "mixed_load",
        INCINERATOR,
        None,
    )
    assert violation["location"]["coordinates"] == [113.55, 23.15]


async def test_an_open_trip_is_looked_at_again_when_it_grows_too_long_without_a_new_record(waste: Waste):
    await register(waste)
    part = chain_of(waste)
    assert part.round is not None
    part.round.config = replace(part.round.config, checks=CheckSettings(open_trip_limit=timedelta(seconds=2)))
    await report(waste, "pickups", lift(datetime.now(UTC) - timedelta(seconds=1), "HP-0001"))
    await run_round(waste)
    (trip,) = await trips_of(waste, open="true")
    assert await chain_violations(waste) == []
    await asyncio.sleep(3.5)
    await run_round(waste)
    (violation,) = await chain_violations(waste)
    assert (violation["kind"], violation["trip_id"]) == ("trip_not_unloaded", trip["id"])
    assert "loaded for more than" in violation["detail"]


async def sql(database: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


async def test_two_weighings_of_one_truck_at_one_instant_leave_the_round_working(waste: Waste):
    """Once, two trips of one id made every round fail on its upsert, for every vehicle, for ever."""
    await register(waste)
    at = BASE
    await report(waste, "pickups", lift(at, "HP-0001"), lift(at + timedelta(hours=2), "HP-0002"))
    await report(
        waste,
        "weighings",
        weighed(at + timedelta(hours=1), 10_100.0, 10_000.0),
        weighed(at + timedelta(hours=1), 10_100.0, 10_000.0, facility_code=INCINERATOR),
    )
    await report(waste, "pickups", lift(at, "HP-0003", stream="REC", plate=RECYCLING_TRUCK))
    await run_round(waste)

    trips = await trips_of(waste, plate=FOOD_TRUCK)
    assert len({trip["id"] for trip in trips}) == len(trips) == 2
    assert [(trip["ending"], trip["points"]) for trip in trips] == [
        ("open", ["HP-0002"]),
        ("unloaded", ["HP-0001"]),
    ]
    assert [trip["plate"] for trip in await trips_of(waste, plate=RECYCLING_TRUCK)] == [RECYCLING_TRUCK]


async def test_a_vehicle_whose_records_fail_the_round_is_noted_again_and_the_others_go_on(
    waste: Waste, waste_database: str
):
    await register(waste)
    await report(waste, "pickups", lift(BASE, "HP-0001"))
    # A row no rule foresaw (a stream the domain does not know), written past the intake.
    await sql(
        waste_database,
        "INSERT INTO pickups (plate, at, rfid, point_code, stream, weight_kg) VALUES ($1, $2, 'X-1', 'HP-0002', 'plastic', 1)",
        OTHER_TRUCK,
        BASE,
    )
    await sql(
        waste_database, "INSERT INTO chain_dirty_vehicles (plate, since) VALUES ($1, $2)", OTHER_TRUCK, BASE
    )
    part = chain_of(waste)
    assert part.metrics is not None
    failed_before = part.metrics.vehicles_failed._value.get()

    await run_round(waste)

    assert [trip["points"] for trip in await trips_of(waste, plate=FOOD_TRUCK)] == [["HP-0001"]]
    assert await trips_of(waste, plate=OTHER_TRUCK) == []
    noted = await sql(waste_database, "SELECT plate FROM chain_dirty_vehicles")
    assert [row["plate"] for row in noted] == [OTHER_TRUCK]
    assert part.metrics.vehicles_failed._value.get() == failed_before + 1


async def test_a_late_departure_moving_a_trips_start_raises_its_violation_once(waste: Waste):
    await register(waste)
    await report(waste, "pickups", lift(BASE + timedelta(minutes=10), "HP-0001", weight_kg=100.0))
    await report(waste, "weighings", weighed(BASE + timedelta(hours=1), 11_000.0, 10_000.0))
    await run_round(waste)
    (before,) = await trips_of(waste, plate=FOOD_TRUCK)
    assert before["start"] == "first_pickup"

    await report(waste, "movements", movement("departed_depot", BASE, depot="DEPOT-1"))
    await run_round(waste)

    (after,) = await trips_of(waste, plate=FOOD_TRUCK)
    assert after["start"] == "depot"
    assert after["id"] != before["id"]
    (violation,) = await chain_violations(waste)
    assert violation["kind"] == "weight_mismatch"
    events = await stream_events(waste.infrastructure.nats_url, "WASTE", at_least=1)
    assert [event.data["kind"] for event in events] == ["weight_mismatch"]


async def test_a_trip_longer_than_the_lookback_stays_one_trip_as_its_records_come(waste: Waste):
    """No boundary in the lookback: the stored trip is assembled again whole, not cut in two."""
    await register(waste)
    part = chain_of(waste)
    assert part.round is not None
    part.round.config = replace(part.round.config, lookback=timedelta(hours=1))
    await report(waste, "pickups", lift(BASE, "HP-0001", stream="OTH", plate=OTHER_TRUCK))
    await run_round(waste)
    await report(
        waste, "pickups", lift(BASE + timedelta(hours=3), "HP-0002", stream="OTH", plate=OTHER_TRUCK)
    )
    await run_round(waste)

    (trip,) = await trips_of(waste, plate=OTHER_TRUCK)
    assert (trip["ending"], trip["points"], trip["pickups"]) == ("open", ["HP-0001", "HP-0002"], 2)


async def test_a_route_imported_again_unchanged_keeps_its_windows_under_judgement(
    waste: Waste, waste_database: str
):
    await register(waste)
    route = {
        "code": "R-FOOD-1",
        "name": "Xiagang food round",
        "plate": FOOD_TRUCK,
        "district_code": "440112",
        "stream": "food",
        "days": [1, 2, 3, 4, 5, 6, 7],
        "time_window": "05:00-08:00",
        "stops": ["HP-0001", "HP-0002"],
        "facility_code": FOOD_PLANT,
    }

    async def imported(body: dict[str, Any]) -> tuple[int, datetime, datetime]:
        response = await waste.post("/v1/routes/import", {"routes": [body]})
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text
        (row,) = await sql(waste_database, "SELECT version, updated_at, schedule_changed_at FROM routes")
        return row["version"], row["updated_at"], row["schedule_changed_at"]

    first = await imported(route)
    assert await imported(route) == first  # the nightly re-import: nothing moves
    renamed = await imported({**route, "name": "Xiagang food round (east)"})
    assert renamed[0] == 2
    assert renamed[1] > first[1]
    assert renamed[2] == first[2]  # a new name is not a new schedule
    rescheduled = await imported({**route, "name": "Xiagang food round (east)", "time_window": "06:00-09:00"})
    assert rescheduled[0] == 3
    assert rescheduled[2] > first[2]


async def test_a_replica_that_stops_gives_the_round_back_at_once(waste: Waste):
    await register(waste)
    leader = chain_of(waste).round
    assert leader is not None
    await run_round(waste)
    assert leader.last.leader
    other = ChainRound(waste.runtime)
    await other.round()
    assert not other.last.leader  # the lease is held

    await leader.release()
    await report(waste, "pickups", lift(BASE, "HP-0001"))
    assert await other.round() == 1
    assert other.last.leader


async def test_the_lease_is_given_back_when_the_service_stops(waste_factory, waste_database: str):
    async with waste_factory() as waste:
        await register(waste)
        await run_round(waste)
        (held,) = await sql(waste_database, "SELECT lease_until > now() AS held FROM chain_cursor")
        assert held["held"]
    (held,) = await sql(waste_database, "SELECT lease_until > now() AS held FROM chain_cursor")
    assert not held["held"]
