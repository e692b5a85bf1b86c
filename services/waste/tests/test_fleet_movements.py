"""The vehicles' movements read from their positions on real PostgreSQL: a depot left and come back
to, a facility arrived at, a stop outside every place reported under way and then with its end, each
position read once by the one replica holding the lease, and the trips built from them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg

from citygrid.settings import to_libpq_url
from services.waste.fleet.movements import MovementsRound
from services.waste.tests.conftest import HUANGPU, READER, TIANHE, Waste
from services.waste.tests.test_chain_intake import (
    FOOD_PLANT,
    FOOD_TRUCK,
    PLATFORM,
    lift,
    register,
    report,
    weighed,
)
from services.waste.tests.test_chain_trips import chain_violations, run_round, trips_of

DEPOT = "HP-DEPOT-1"
DEPOT_AT = (113.470, 23.100)
PLANT_AT = (113.52, 23.15)  # FOOD_PLANT's location in the chain tests' register
POINT_AT = (113.481, 23.11)  # HP-0001's
OUTSIDE = (113.500, 23.130)  # no place within a kilometre


def depot(code: str = DEPOT, **changes: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": "Xiagang depot",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": list(DEPOT_AT)},
        "radius_m": 120,
    } | changes


async def register_with_depot(waste: Waste) -> None:
    await register(waste)
    response = await waste.post("/v1/depots/import", {"depots": [depot()]})
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1


def at_(moment: datetime, where: tuple[float, float], speed_kmh: float) -> dict[str, Any]:
    return {
        "plate": FOOD_TRUCK,
        "at": moment.isoformat(),
        "location": {"type": "Point", "coordinates": list(where)},
        "speed_kmh": speed_kmh,
        "direction": 90,
    }


def standing(since: datetime, minutes: int, where: tuple[float, float]) -> list[dict[str, Any]]:
    """A position every 30 s for ``minutes``, standing."""
    return [at_(since + timedelta(seconds=30 * step), where, 0.0) for step in range(minutes * 2 + 1)]


async def relay(waste: Waste, positions: list[dict[str, Any]]) -> None:
    for start in range(0, len(positions), 1000):
        response = await waste.post(
            "/v1/positions", {"positions": positions[start : start + 1000]}, scopes=PLATFORM
        )
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text


def movements_of(waste: Waste) -> MovementsRound:
    found: MovementsRound = waste.app.state.fleet.movements
    return found


def positions_read(*replicas: Waste) -> float:
    return sum(
        replica.runtime.metrics.registry.get_sample_value("citygrid_waste_movements_positions_read_total")
        or 0.0
        for replica in replicas
    )


async def lead(*replicas: Waste) -> Waste:
    """Rounds on every replica until one leads (the service's own job may be in a round); that one."""
    for _attempt in range(100):
        for replica in replicas:
            await movements_of(replica).round()
            if movements_of(replica).last.leader:
                return replica
        await asyncio.sleep(0.05)
    raise AssertionError("no replica led a movements round in five seconds")


class Reader:
    """Every position relayed since it started, read by whichever replica leads: rounds are run until
    the replicas have read them all (another transaction running holds the horizon back a while)."""

    def __init__(self, *replicas: Waste) -> None:
        self.replicas = replicas
        self.start = positions_read(*replicas)
        self.relayed = 0

    async def relay(self, positions: list[dict[str, Any]]) -> None:
        await relay(self.replicas[0], positions)
        self.relayed += len(positions)

    async def read_all(self) -> None:
        for _attempt in range(200):
            await lead(*self.replicas)
            if positions_read(*self.replicas) - self.start >= self.relayed:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the positions relayed were not all read in ten seconds")


async def reading(*replicas: Waste) -> Reader:
    """A first round makes the cursor (at the horizon: what was stored before is history)."""
    await lead(*replicas)
    return Reader(*replicas)


def in_order(times: dict[str, datetime]) -> list[tuple[str, str, datetime, datetime | None, str]]:
    """The movements of ``a_round``, as read from its positions in order."""
    return [
        ("departed_depot", DEPOT, times["left"], None, "positions"),
        ("stopped", "", times["stopped"], times["stopped"] + timedelta(minutes=3, seconds=30), "positions"),
        ("arrived_at_facility", FOOD_PLANT, times["arrived"], None, "positions"),
        ("returned_to_depot", DEPOT, times["back"], None, "positions"),
    ]


async def stored_movements(database: str) -> list[tuple[str, str, datetime, datetime | None, str]]:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        rows = await connection.fetch(
            "SELECT kind, place, at, ended_at, source FROM movements WHERE plate = $1 ORDER BY at, kind",
            FOOD_TRUCK,
        )
    finally:
        await connection.close()
    return [(r["kind"], r["place"], r["at"], r["ended_at"], r["source"]) for r in rows]


async def sql(database: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


async def received_at(database: str) -> list[tuple[str, datetime, datetime]]:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        rows = await connection.fetch("SELECT kind, at, received_at FROM movements ORDER BY at, kind")
    finally:
        await connection.close()
    return [(r["kind"], r["at"], r["received_at"]) for r in rows]


def a_round(start: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, datetime]]:
    """The food truck's round: out of the depot, a lift at HP-0001, a four-minute stop on the road
    (under way at the end of the first upload), the plant, back to the depot."""
    t = start
    first: list[dict[str, Any]] = [at_(t, DEPOT_AT, 0.0), at_(t + timedelta(seconds=30), DEPOT_AT, 0.0)]
    left = t + timedelta(minutes=1)
    first += [at_(left, (113.475, 23.104), 25.0), at_(left + timedelta(minutes=2), POINT_AT, 2.0)]
    lifted = left + timedelta(minutes=3)
    first += [at_(lifted, POINT_AT, 1.0), at_(lifted + timedelta(minutes=2), (113.49, 23.12), 30.0)]
    stopped = lifted + timedelta(minutes=5)
    first += standing(stopped, 3, OUTSIDE)
    moved_on = stopped + timedelta(minutes=4)
    second = standing(stopped + timedelta(minutes=3, seconds=30), 0, OUTSIDE)
    second += [at_(moved_on, OUTSIDE, 20.0), at_(moved_on + timedelta(minutes=5), (113.515, 23.145), 30.0)]
    arrived = moved_on + timedelta(minutes=8)
    second += [at_(arrived, PLANT_AT, 5.0), at_(arrived + timedelta(minutes=10), PLANT_AT, 0.0)]
    leaving = arrived + timedelta(minutes=12)
    second += [
        at_(leaving, (113.50, 23.12), 40.0),
        at_(leaving + timedelta(minutes=10), (113.472, 23.101), 10.0),
    ]
    back = leaving + timedelta(minutes=11)
    second += [at_(back, DEPOT_AT, 3.0)]
    return (
        first,
        second,
        {
            "left": left,
            "lifted": lifted,
            "stopped": stopped,
            "moved_on": moved_on,
            "arrived": arrived,
            "back": back,
        },
    )


async def test_a_round_of_positions_becomes_the_trip_its_platform_would_have_reported(
    waste: Waste, waste_database: str
):
    await register_with_depot(waste)
    reader = await reading(waste)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    first, second, times = a_round(start)
    await reader.relay(first)
    await reader.read_all()
    # The stop is under way at the end of the first upload: reported without its end.
    assert await stored_movements(waste_database) == [
        ("departed_depot", DEPOT, times["left"], None, "positions"),
        ("stopped", "", times["stopped"], None, "positions"),
    ]
    await reader.relay(second)
    await reader.read_all()
    assert await stored_movements(waste_database) == in_order(times)
    # Nothing new: a round reads nothing and stores nothing again.
    await lead(waste)
    assert movements_of(waste).last.positions == 0
    assert await stored_movements(waste_database) == in_order(times)

    await report(waste, "pickups", lift(times["lifted"], "HP-0001", weight_kg=300.0))
    await report(waste, "weighings", weighed(times["arrived"] + timedelta(minutes=5), 10_290.0, 10_000.0))
    await run_round(waste)
    (trip,) = await trips_of(waste, plate=FOOD_TRUCK)
    assert (trip["start"], trip["ending"], trip["facility_code"]) == ("depot", "unloaded", FOOD_PLANT)
    assert (trip["points"], trip["picked_up_kg"], trip["delivered_kg"]) == (["HP-0001"], 300.0, 290.0)
    # A four-minute stop is not an unloading: nothing to report.
    assert await chain_violations(waste) == []

    since, until = quote(start.isoformat()), quote((start + timedelta(hours=2)).isoformat())
    page = await waste.get(
        f"/v1/vehicles/{quote(FOOD_TRUCK)}/movements?since={since}&until={until}&limit=3", scopes=READER
    )
    assert page.status_code == 200, page.text
    body = page.json()
    assert [(m["kind"], m["place"], m["source"]) for m in body["items"]] == [
        ("departed_depot", DEPOT, "positions"),
        ("stopped", None, "positions"),
        ("arrived_at_facility", FOOD_PLANT, "positions"),
    ]
    assert body["items"][1]["location"]["coordinates"] == list(OUTSIDE)
    rest = await waste.get(
        f"/v1/vehicles/{quote(FOOD_TRUCK)}/movements?since={since}&until={until}&limit=3"
        f"&cursor={body['next_cursor']}",
        scopes=READER,
    )
    assert [m["kind"] for m in rest.json()["items"]] == ["returned_to_depot"]
    assert rest.json()["next_cursor"] is None


async def test_a_long_stop_outside_every_place_while_loaded_is_an_unloading_at_an_unregistered_place(
    waste: Waste,
):
    await register_with_depot(waste)
    reader = await reading(waste)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    lifted = start + timedelta(minutes=2)
    track = [at_(start, DEPOT_AT, 0.0), at_(start + timedelta(minutes=1), POINT_AT, 20.0)]
    track += [at_(lifted, POINT_AT, 0.0)]
    stopped = lifted + timedelta(minutes=5)
    track += standing(stopped, 15, OUTSIDE)
    track += [at_(stopped + timedelta(minutes=16), (113.49, 23.12), 30.0)]
    await report(waste, "pickups", lift(lifted, "HP-0001", weight_kg=300.0))
    await reader.relay(track)
    await reader.read_all()
    await run_round(waste)
    (violation,) = await chain_violations(waste)
    assert (violation["kind"], violation["plate"]) == ("unloaded_at_unregistered_place", FOOD_TRUCK)
    assert violation["location"]["coordinates"] == list(OUTSIDE)


async def test_one_replica_reads_the_positions_and_each_once(waste_factory, waste_database: str):
    async with waste_factory() as first, waste_factory() as second:
        await register_with_depot(first)
        reader = await reading(first, second)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        track, more, times = a_round(start)
        await reader.relay(track)
        await relay(second, more)  # stored by the other replica's writer
        reader.relayed += len(more)
        await reader.read_all()
        # Whichever replica read them (their jobs run rounds too), each was read once.
        assert positions_read(first, second) - reader.start == len(track) + len(more)
        assert await stored_movements(waste_database) == in_order(times)
        leader = await lead(first, second)
        follower = second if leader is first else first
        # The other replica does not lead while the lease holds.
        assert await movements_of(follower).round() == 0
        assert not movements_of(follower).last.leader


async def test_a_replica_taking_over_goes_on_where_the_last_round_left_off(
    waste_factory, waste_database: str
):
    async with waste_factory() as first:
        await register_with_depot(first)
        reader = await reading(first)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        track, more, times = a_round(start)
        await reader.relay(track)  # ends with the stop under way
        await reader.read_all()
    # The first replica stopped (and gave its lease back); another reads the rest.
    async with waste_factory() as second:
        reader = Reader(second)
        await reader.relay(more)
        await reader.read_all()
        assert await stored_movements(waste_database) == in_order(times)


async def test_positions_uploaded_late_are_read_with_the_track_before_them_and_nothing_twice(
    waste: Waste, waste_database: str
):
    await register_with_depot(waste)
    reader = await reading(waste)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    first, second, times = a_round(start)
    # The terminal's newest positions first; the stretch it kept without network an hour later.
    await reader.relay(second)
    await reader.read_all()
    before = await stored_movements(waste_database)
    assert ("departed_depot", DEPOT, times["left"], None, "positions") not in before
    await reader.relay(first)
    await reader.read_all()
    # Read again from before the late positions: what the whole track in order gives, nothing twice.
    assert await stored_movements(waste_database) == in_order(times)
    # A report sent again (its acknowledgement lost) is not a late position: nothing is read again,
    # so no movement is replaced (a replaced one would be received anew).
    received = await received_at(waste_database)
    await reader.relay(first[-3:])
    await reader.read_all()
    assert await received_at(waste_database) == received
    assert await stored_movements(waste_database) == in_order(times)


async def test_depots_are_registered_listed_and_refused_when_wrong(waste: Waste):
    await register_with_depot(waste)
    again = await waste.post(
        "/v1/depots/import", {"depots": [depot(), depot("TH-DEPOT-1", district_code=TIANHE)]}
    )
    assert again.status_code == 200, again.text
    assert (again.json()["created"], again.json()["updated"]) == (1, 1)
    listed = await waste.get("/v1/depots", scopes=READER, district=HUANGPU)
    assert [d["code"] for d in listed.json()["items"]] == [DEPOT]
    one = await waste.get(f"/v1/depots/{DEPOT}", scopes=READER)
    assert (one.json()["radius_m"], one.json()["location"]["coordinates"]) == (120.0, list(DEPOT_AT))
    hidden = await waste.get("/v1/depots/TH-DEPOT-1", scopes=READER, district=HUANGPU)
    assert (hidden.status_code, hidden.json()["code"]) == (403, "auth.other_district")
    for wrong in (
        {"radius_m": 5},
        {"radius_m": 5000},
        {"location": {"type": "Point", "coordinates": [200, 0]}},
    ):
        refused = await waste.post("/v1/depots/import", {"depots": [depot() | wrong]})
        assert refused.status_code == 422, (wrong, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    bound = await waste.post("/v1/depots/import", {"depots": [depot()]}, district=HUANGPU)
    assert bound.status_code == 403, bound.text


async def test_a_vehicles_movements_are_read_in_a_bounded_period_of_its_district(waste: Waste):
    await register_with_depot(waste)
    now = datetime.now(UTC)
    path = f"/v1/vehicles/{quote(FOOD_TRUCK)}/movements"
    span = f"since={quote((now - timedelta(days=1)).isoformat())}&until={quote(now.isoformat())}"
    assert (await waste.get(f"{path}?{span}", scopes=READER)).json() == {"items": [], "next_cursor": None}
    too_long = f"since={quote((now - timedelta(days=40)).isoformat())}&until={quote(now.isoformat())}"
    refused = await waste.get(f"{path}?{too_long}", scopes=READER)
    assert (refused.status_code, refused.json()["code"]) == (422, "waste.invalid_period")
    forged = await waste.get(f"{path}?{span}&cursor=bm90LW9uZQ", scopes=READER)
    assert (forged.status_code, forged.json()["code"]) == (400, "pagination.invalid_cursor")
    elsewhere = await waste.get(f"{path}?{span}", scopes=READER, district=TIANHE)
    assert (elsewhere.status_code, elsewhere.json()["code"]) == (403, "auth.other_district")
    unknown = await waste.get(f"/v1/vehicles/{quote('粤A9999X')}/movements?{span}", scopes=READER)
    assert unknown.status_code == 404, unknown.text


def with_the_stop_missing(
    first: list[dict[str, Any]], times: dict[str, datetime]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first upload without the stop's positions (a terminal that lost its network there), and
    those positions, uploaded later."""
    stopped = times["stopped"].isoformat()
    cut = next(index for index, p in enumerate(first) if p["at"] == stopped)
    return first[:cut], first[cut:]


async def test_a_stretch_uploaded_late_in_the_middle_of_a_track_is_read_with_what_came_before_it(
    waste: Waste, waste_database: str
):
    await register_with_depot(waste)
    reader = await reading(waste)
    first, second, times = a_round(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    before, stretch = with_the_stop_missing(first, times)
    await reader.relay(before + second)
    await reader.read_all()
    without = await stored_movements(waste_database)
    assert [kind for kind, *_ in without] == ["departed_depot", "arrived_at_facility", "returned_to_depot"]
    # The platform reports the arrival the positions showed: it is the platform's too now.
    await report(
        waste,
        "movements",
        {
            "kind": "arrived_at_facility",
            "plate": FOOD_TRUCK,
            "at": times["arrived"].isoformat(),
            "facility_code": FOOD_PLANT,
        },
    )
    await reader.relay(stretch)
    await reader.read_all()
    expected = in_order(times)
    expected[2] = (*expected[2][:4], "platform")
    assert await stored_movements(waste_database) == expected


async def test_late_vehicles_beyond_a_rounds_share_wait_for_the_next_rounds(
    waste: Waste, waste_database: str
):
    await register_with_depot(waste)
    reader = await reading(waste)
    round_ = movements_of(waste)
    first, second, times = a_round(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))
    before, stretch = with_the_stop_missing(first, times)
    await reader.relay(before + second)
    await reader.read_all()
    round_.config = replace(round_.config, late_per_round=0)
    await reader.relay(stretch)
    await reader.read_all()
    # Read, but the track is not read again yet: the vehicle waits its turn.
    assert "stopped" not in [kind for kind, *_ in await stored_movements(waste_database)]
    (waiting,) = await sql(
        waste_database, "SELECT redo_from FROM vehicle_tracks WHERE plate = $1", FOOD_TRUCK
    )
    assert waiting["redo_from"] == times["stopped"]
    round_.config = replace(round_.config, late_per_round=100)
    await lead(waste)
    assert await stored_movements(waste_database) == in_order(times)
    (done,) = await sql(waste_database, "SELECT redo_from FROM vehicle_tracks WHERE plate = $1", FOOD_TRUCK)
    assert done["redo_from"] is None
