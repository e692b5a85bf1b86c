"""The collection chain's intake on real PostgreSQL: pickups, weighings and movements taken item by
item, every refusal named by its code, a batch sent twice stored once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.settings import to_libpq_url
from citygrid.testing import first_runs_done
from services.waste.chain.retention import purge_once
from services.waste.tests.conftest import BOX, HUANGPU, READER, Waste, point

NOW = datetime.now(UTC).replace(microsecond=0)
FOOD_TRUCK = "粤A1001F"
RECYCLING_TRUCK = "粤A2002R"
OTHER_TRUCK = "粤A3003Q"
FOOD_PLANT = "HP-FOOD-1"
INCINERATOR = "HP-BURN-1"
RECYCLER = "HP-RECY-1"
PLATFORM = BOX  # vehicles' platforms and weighbridges hold ``waste:ingest`` as the AI boxes do


def vehicle(plate: str, stream: str, terminal: int) -> dict[str, Any]:
    return {
        "plate": plate,
        "kind": "collection",
        "stream": stream,
        "company": "Huangpu Sanitation",
        "district_code": HUANGPU,
        "terminal_phone": f"0139{terminal:08d}",
    }


def facility(code: str, kind: str, streams: list[str], lon: float) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Huangpu {kind}",
        "kind": kind,
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [lon, 23.15]},
        "streams": streams,
        "weighbridges": ["WB-1", "WB-2"],
    }


async def register(waste: Waste, *points: str) -> None:
    """Points (each with a bin of every stream), a truck of each of three streams, three facilities."""
    await waste.register_points(*(point(code) for code in points or ("HP-0001", "HP-0002", "HP-0003")))
    for path, body in (
        (
            "/v1/vehicles/import",
            {
                "vehicles": [
                    vehicle(FOOD_TRUCK, "food", 1001),
                    vehicle(RECYCLING_TRUCK, "recyclable", 1002),
                    vehicle(OTHER_TRUCK, "other", 1003),
                ]
            },
        ),
        (
            "/v1/facilities/import",
            {
                "facilities": [
                    facility(FOOD_PLANT, "food_waste_treatment", ["food"], 113.52),
                    facility(INCINERATOR, "incineration", ["other"], 113.55),
                    facility(RECYCLER, "recycling", ["recyclable"], 113.58),
                ]
            },
        ),
    ):
        response = await waste.post(path, body)
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text


def lift(at: datetime, point_code: str = "HP-0001", stream: str = "FOO", **changes: Any) -> dict[str, Any]:
    return {
        "plate": FOOD_TRUCK,
        "point_code": point_code,
        "rfid": f"{point_code}-{stream}",
        "weight_kg": 120.0,
        "at": at.isoformat(),
        **changes,
    }


def weighed(at: datetime, gross: float, tare: float, **changes: Any) -> dict[str, Any]:
    return {
        "facility_code": FOOD_PLANT,
        "weighbridge": "WB-1",
        "plate": FOOD_TRUCK,
        "gross_kg": gross,
        "tare_kg": tare,
        "at": at.isoformat(),
        **changes,
    }


async def report(waste: Waste, what: str, *items: dict[str, Any], **as_: Any) -> dict[str, Any]:
    response = await waste.post(f"/v1/{what}", {what: list(items)}, scopes=PLATFORM, **as_)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def outcomes(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(item["outcome"], item["code"]) for item in result["results"]]


COUNTS = {
    "pickups": "SELECT count(*) FROM pickups",
}


async def count(database: str, table: str) -> int:
    connection = await asyncpg.connect(to_libpq_url(database))
    try:
        return int(await connection.fetchval(COUNTS[table]))
    finally:
        await connection.close()


async def test_each_pickup_of_a_batch_is_answered_on_its_own_and_a_batch_sent_twice_is_stored_once(
    waste: Waste, waste_database: str
):
    await register(waste)
    batch = [
        lift(NOW - timedelta(hours=2)),
        lift(NOW - timedelta(hours=2), point_code="HP-0002", weight_kg=80.5),
        lift(NOW - timedelta(hours=2), plate="粤Z9999Z"),
        lift(NOW - timedelta(hours=2), point_code="HP-0404"),
        lift(NOW - timedelta(hours=2), rfid="NO-SUCH-TAG"),
        lift(NOW - timedelta(hours=2), rfid="HP-0003-FOO"),  # a bin of another point
        lift(NOW + timedelta(hours=1)),
        lift(NOW - timedelta(days=8)),
        lift(NOW - timedelta(hours=2)),  # the first item again, in the same batch
    ]
    first = await report(waste, "pickups", *batch)
    assert outcomes(first) == [
        ("stored", None),
        ("stored", None),
        ("refused", "waste.unknown_vehicle"),
        ("refused", "waste.unknown_point"),
        ("refused", "waste.unknown_bin"),
        ("refused", "waste.bin_elsewhere"),
        ("refused", "waste.record_in_the_future"),
        ("refused", "waste.record_too_old"),
        ("duplicate", None),
    ]
    assert (first["received"], first["stored"], first["duplicates"], first["refused"]) == (9, 2, 1, 6)
    assert all(item["detail"] for item in first["results"] if item["outcome"] == "refused")

    again = await report(waste, "pickups", *batch[:2])  # the platform was not sure the batch arrived
    assert outcomes(again) == [("duplicate", None), ("duplicate", None)]
    assert await count(waste_database, "pickups") == 2


async def test_a_pickup_takes_its_stream_from_the_register_of_the_bins(waste: Waste, waste_database: str):
    await register(waste)
    await report(waste, "pickups", lift(NOW - timedelta(hours=1), stream="REC"))
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        stored = await connection.fetchrow("SELECT plate, point_code, stream, weight_kg FROM pickups")
    finally:
        await connection.close()
    assert tuple(stored) == (FOOD_TRUCK, "HP-0001", "recyclable", 120.0)


async def test_weighings_refuse_unknown_facilities_weighbridges_vehicles_and_a_tare_above_the_gross(
    waste: Waste, waste_database: str
):
    await register(waste)
    at = NOW - timedelta(minutes=30)
    result = await report(
        waste,
        "weighings",
        weighed(at, 9_800.0, 7_300.0),
        weighed(at, 9_800.0, 7_300.0, facility_code="HP-NONE"),
        weighed(at, 9_800.0, 7_300.0, weighbridge="WB-9"),
        weighed(at, 9_800.0, 7_300.0, plate="粤Z9999Z"),
        weighed(at + timedelta(minutes=1), 7_000.0, 7_300.0),
        weighed(at, 9_900.0, 7_300.0),  # the same vehicle, facility and time: the record resent
    )
    assert outcomes(result) == [
        ("stored", None),
        ("refused", "waste.unknown_facility"),
        ("refused", "waste.unknown_weighbridge"),
        ("refused", "waste.unknown_vehicle"),
        ("refused", "waste.tare_above_gross"),
        ("duplicate", None),
    ]
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        stored = await connection.fetchrow("SELECT net_kg, stream, district_code FROM weighings")
    finally:
        await connection.close()
    assert tuple(stored) == (2_500.0, "food", HUANGPU)


async def test_a_stop_reported_under_way_takes_its_end_when_reported_again(waste: Waste, waste_database: str):
    await register(waste)
    started = NOW - timedelta(minutes=40)
    stop = {
        "kind": "stopped",
        "plate": FOOD_TRUCK,
        "at": started.isoformat(),
        "location": {"type": "Point", "coordinates": [113.5, 23.2]},
    }
    first = await report(
        waste,
        "movements",
        {
            "kind": "departed_depot",
            "plate": FOOD_TRUCK,
            "depot": "DEPOT-1",
            "at": (started - timedelta(hours=1)).isoformat(),
        },
        stop,
        {
            "kind": "arrived_at_facility",
            "plate": FOOD_TRUCK,
            "facility_code": "HP-NONE",
            "at": started.isoformat(),
        },
        {"kind": "returned_to_depot", "plate": "粤Z9999Z", "depot": "DEPOT-1", "at": started.isoformat()},
    )
    assert outcomes(first) == [
        ("stored", None),
        ("stored", None),
        ("refused", "waste.unknown_facility"),
        ("refused", "waste.unknown_vehicle"),
    ]
    ended = {**stop, "ended_at": (started + timedelta(minutes=25)).isoformat()}
    assert outcomes(await report(waste, "movements", ended)) == [("updated", None)]
    assert outcomes(await report(waste, "movements", ended, stop)) == [
        ("duplicate", None),
        ("duplicate", None),
    ]
    backwards = {**stop, "at": NOW.isoformat(), "ended_at": (NOW - timedelta(minutes=1)).isoformat()}
    assert outcomes(await report(waste, "movements", backwards)) == [
        ("refused", "waste.stop_ends_before_it_starts")
    ]
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        stored = await connection.fetchrow(
            "SELECT ended_at, lon, lat, source FROM movements WHERE kind = 'stopped'"
        )
    finally:
        await connection.close()
    assert (stored["ended_at"], stored["lon"], stored["lat"], stored["source"]) == (
        started + timedelta(minutes=25),
        113.5,
        23.2,
        "platform",
    )


async def test_a_district_bound_platform_reports_its_districts_vehicles_only(waste: Waste):
    await register(waste)
    result = await report(waste, "pickups", lift(NOW - timedelta(hours=1)), district="440106")
    assert outcomes(result) == [("refused", "auth.other_district")]


async def test_a_batch_too_large_or_with_a_time_without_its_offset_is_refused_whole(waste: Waste):
    await register(waste)
    naive = lift(NOW - timedelta(hours=1)) | {"at": "2026-12-03T08:00:00"}
    response = await waste.post("/v1/pickups", {"pickups": [naive]}, scopes=PLATFORM)
    assert response.status_code == 422, response.text
    too_many = [lift(NOW - timedelta(seconds=i)) for i in range(1001)]
    response = await waste.post("/v1/pickups", {"pickups": too_many}, scopes=PLATFORM)
    assert response.status_code == 422, response.text
    negative = lift(NOW - timedelta(hours=1)) | {"weight_kg": -1}
    response = await waste.post("/v1/pickups", {"pickups": [negative]}, scopes=PLATFORM)
    assert response.status_code == 422, response.text


async def test_a_reader_may_not_report_records(waste: Waste):
    await register(waste)
    for what, item in (
        ("pickups", lift(NOW)),
        ("weighings", weighed(NOW, 2.0, 1.0)),
    ):
        response = await waste.post(f"/v1/{what}", {what: [item]}, scopes=READER)
        assert response.status_code == 403, response.text


async def test_records_older_than_their_retention_are_purged(waste: Waste, waste_database: str):
    await register(waste)
    await report(waste, "pickups", lift(NOW - timedelta(hours=1)))
    # The service's own round runs a few seconds after the start: let it pass first.
    await first_runs_done(waste.runtime, "waste-chain-retention")
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        await connection.execute(
            "INSERT INTO pickups (plate, at, rfid, point_code, stream, weight_kg) "
            "VALUES ($1, $2, 'HP-0001-FOO', 'HP-0001', 'food', 100)",
            FOOD_TRUCK,
            NOW - timedelta(days=401),
        )
        await connection.execute(
            "INSERT INTO weighings (plate, at, facility_code, weighbridge, gross_kg, tare_kg, net_kg, stream, "
            "district_code) VALUES ($1, $2, $3, 'WB-1', 10, 5, 5, 'food', $4)",
            FOOD_TRUCK,
            NOW - timedelta(days=401),
            FOOD_PLANT,
            HUANGPU,
        )
        deleted = await purge_once(waste.runtime.db)
        kept = await connection.fetchval("SELECT count(*) FROM pickups")
        weighings = await connection.fetchval("SELECT count(*) FROM weighings")
    finally:
        await connection.close()
    assert (deleted, kept, weighings) == (1, 1, 1)  # a weighing is kept five years


async def test_a_district_bound_platform_may_not_record_at_another_districts_point_or_vehicle(
    waste: Waste,
):
    """Its own vehicle at another district's point would mark that district's visits done; another
    district's vehicle weighed at its facility would add to that district's tonnage."""
    await register(waste)
    await waste.register_points(point("TH-0009", district="440106"))
    at_other_point = await report(
        waste, "pickups", lift(NOW - timedelta(hours=1), "TH-0009"), district=HUANGPU
    )
    assert outcomes(at_other_point) == [("refused", "auth.other_district")]
    tianhe_truck = vehicle("粤A9009T", "food", 1009) | {"district_code": "440106"}
    response = await waste.post("/v1/vehicles/import", {"vehicles": [tianhe_truck]})
    assert response.json()["refused"] == [], response.text
    weighed_here = await report(
        waste, "weighings", weighed(NOW - timedelta(hours=1), 9.0, 1.0, plate="粤A9009T"), district=HUANGPU
    )
    assert outcomes(weighed_here) == [("refused", "auth.other_district")]


async def test_a_record_sent_again_with_other_values_is_refused_and_the_first_is_kept(
    waste: Waste, waste_database: str
):
    await register(waste)
    at = NOW - timedelta(hours=1)
    assert outcomes(await report(waste, "weighings", weighed(at, 10_400.0, 10_000.0))) == [("stored", None)]
    same = await report(waste, "weighings", weighed(at, 10_400.0, 10_000.0))
    assert outcomes(same) == [("duplicate", None)]
    corrected = await report(waste, "weighings", weighed(at, 10_400.0, 10_050.0))  # not taken silently
    assert outcomes(corrected) == [("refused", "waste.conflicting_record")]
    connection = await asyncpg.connect(to_libpq_url(waste_database))
    try:
        assert await connection.fetchval("SELECT tare_kg FROM weighings") == 10_000.0
    finally:
        await connection.close()
