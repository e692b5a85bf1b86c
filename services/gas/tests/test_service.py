"""The gas service on real PostgreSQL and NATS: registry, scans, the fill check and its violations,
station locks, trace and recall, personal data, and bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from citygrid.clock import CITY_TIMEZONE
from citygrid.settings import to_libpq_url
from services.gas.tests.conftest import OTHER_STATION, READER, SCALE, STATION, TIANHE, Gas, cylinder


async def fetch(gas: Gas, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


async def register(gas: Gas, *cylinders: dict[str, Any]) -> None:
    await gas.register_demo()
    response = await gas.post("/v1/cylinders/import", {"cylinders": list(cylinders)})
    assert response.status_code == 200, response.text
    assert response.json()["refused"] == [], response.text


async def check(gas: Gas, code: str = "GZ0000000001", station: str = STATION, **body: Any) -> dict[str, Any]:
    response = await gas.post(
        "/v1/fill-checks",
        {"cylinder_code": code, "station_code": station, "scale_id": "S1", **body},
        scopes=SCALE,
        unit=station,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def scan(kind: str, code: str = "GZ0000000001", minutes_ago: float = 10, **fields: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"cylinder_code": code, "kind": kind, "at": at.isoformat(), **fields}


def fill(code: str = "GZ0000000001", minutes_ago: float = 30, batch: str = "B1") -> dict[str, Any]:
    return scan("fill", code, minutes_ago, enterprise_code=STATION, net_mass_kg=14.5, fill_batch=batch)


async def scans(gas: Gas, *items: dict[str, Any]) -> dict[str, Any]:
    response = await gas.post("/v1/scans", {"scans": list(items)}, scopes=SCALE)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def violation_events(gas: Gas) -> list[dict[str, Any]]:
    rows = await fetch(
        gas, "SELECT payload FROM outbox WHERE subject LIKE 'gas.violation.detected%' ORDER BY seq"
    )
    return [json.loads(row["payload"]) for row in rows]


async def test_a_sound_cylinder_at_its_owners_station_may_be_filled(gas: Gas) -> None:
    await register(gas, cylinder())
    answer = await check(gas)
    assert answer["allowed"] is True
    assert answer["reasons"] == []
    assert answer["cylinder_status"] == "in_stock"
    assert await violation_events(gas) == []
    recorded = await fetch(gas, "SELECT allowed, station_code FROM fill_checks")
    assert [(r["allowed"], r["station_code"]) for r in recorded] == [(True, STATION)]


async def test_a_refusal_gives_every_reason_and_raises_one_violation_a_day(gas: Gas) -> None:
    made = date.today() - timedelta(days=365 * 5)
    await register(gas, cylinder("NF0000000009", owner="NANFANG", made=made))
    first = await check(gas, "NF0000000009", observations={"damaged": True})
    assert first["allowed"] is False
    assert first["reasons"] == ["inspection_overdue", "not_owned_by_filler", "damaged"]
    assert first["case_reference"] == f"fill:{STATION}:NF0000000009:{first['checked_at'][:10]}"
    again = await check(gas, "NF0000000009")
    assert again["allowed"] is False
    events = await violation_events(gas)
    assert len(events) == 1, "the scale asking again the same day raises no second case"
    payload = events[0]
    assert payload["data"]["reference"] == first["case_reference"]
    assert payload["data"]["category_code"] == "20605"
    assert payload["data"]["reasons"] == ["inspection_overdue", "not_owned_by_filler", "damaged"]
    counted = await fetch(gas, "SELECT refusals FROM violations")
    assert [r["refusals"] for r in counted] == [2]


async def test_concurrent_refusals_on_two_replicas_raise_one_violation(gas_factory) -> None:
    async with gas_factory() as one, gas_factory() as two:
        await register(one, cylinder("GZ0000000777", made=date.today() - timedelta(days=365 * 5)))
        answers = await asyncio.gather(*(check(replica, "GZ0000000777") for replica in (one, two) * 5))
        assert all(not answer["allowed"] for answer in answers)
        assert len(await violation_events(one)) == 1


async def test_an_unregistered_code_is_refused_with_the_stations_own_reasons(gas: Gas) -> None:
    await gas.register_demo()
    answer = await check(gas, "GZ9999999999")
    assert answer["reasons"] == ["unregistered"]
    assert answer["cylinder_status"] is None


async def test_a_locked_station_refuses_until_unlocked_and_the_locks_are_audited(gas: Gas) -> None:
    await register(gas, cylinder())
    refused = await gas.post(f"/v1/stations/{STATION}/lock", {"reason": "unlicensed refilling"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "gas.not_a_regulator"
    locked = await gas.post(
        f"/v1/stations/{STATION}/lock", {"reason": "unlicensed refilling"}, roles=("regulator",)
    )
    assert locked.status_code == 200, locked.text
    assert locked.json()["locked"] is True
    twice = await gas.post(f"/v1/stations/{STATION}/lock", {"reason": "again"}, roles=("regulator",))
    assert twice.status_code == 409
    assert twice.json()["code"] == "gas.station_already_locked"
    assert (await check(gas))["reasons"] == ["station_locked"]
    unlocked = await gas.post(f"/v1/stations/{STATION}/unlock", {"reason": "rectified"}, roles=("regulator",))
    assert unlocked.status_code == 200
    assert (await check(gas))["allowed"] is True
    trail = await gas.get(f"/v1/stations/{STATION}/locks")
    assert [(e["locked"], e["reason"]) for e in trail.json()] == [
        (False, "rectified"),
        (True, "unlicensed refilling"),
    ]


async def test_an_expired_licence_and_an_entrustment(gas: Gas) -> None:
    await register(gas, cylinder("NF0000000001", owner="NANFANG"))
    assert (await check(gas, "NF0000000001"))["reasons"] == ["not_owned_by_filler"]
    entrusted = await gas.client.put(
        f"/v1/stations/{STATION}/entrustments", json={"company_code": "NANFANG"}, headers=gas.as_()
    )
    assert entrusted.status_code == 204, entrusted.text
    assert (await check(gas, "NF0000000001"))["allowed"] is True
    station = {
        "code": STATION,
        "kind": "filling_station",
        "name": "Tianhe filling station",
        "company_code": "GZGAS",
        "licence_number": "CZ-1",
        "licence_valid_until": (date.today() - timedelta(days=2)).isoformat(),
        "district_code": TIANHE,
        "location": {"type": "Point", "coordinates": [113.3612, 23.1349]},
    }
    updated = await gas.post("/v1/enterprises/import", {"enterprises": [station]})
    assert updated.json()["updated"] == 1
    assert (await check(gas, "NF0000000001"))["reasons"] == ["licence_expired"]


async def test_a_scale_credential_asks_for_its_own_station_only(gas: Gas) -> None:
    await register(gas, cylinder())
    response = await gas.post(
        "/v1/fill-checks",
        {"cylinder_code": "GZ0000000001", "station_code": STATION, "scale_id": "S1"},
        scopes=SCALE,
        unit=OTHER_STATION,
    )
    assert response.status_code == 403
    assert response.json()["code"] == "gas.not_this_station"
    assert await fetch(gas, "SELECT id FROM fill_checks") == []


async def test_the_lifecycle_through_scans_and_the_trace(gas: Gas) -> None:
    await register(gas, cylinder())
    user = await gas.post(
        "/v1/users",
        {
            "kind": "household",
            "name": "陈小明",
            "phone": "13800138000",
            "address": "体育西路 100 号",
            "district_code": TIANHE,
        },
    )
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    result = await scans(
        gas,
        scan("deliver", minutes_ago=5, user_id=user_id),
        fill(minutes_ago=30),
        scan("dispatch", minutes_ago=20, enterprise_code=STATION),
    )
    assert [r["accepted"] for r in result["results"]] == [True, True, True]
    # Sent out of order, applied in time order (a delivery before its fill would be refused).
    assert [r["index"] for r in result["results"]] == [0, 1, 2]
    held = await gas.get(f"/v1/users/{user_id}/cylinders")
    assert [c["code"] for c in held.json()] == ["GZ0000000001"]
    assert held.json()[0]["status"] == "at_user"
    assert (await check(gas))["reasons"] == ["already_filled"]
    trace = await gas.get("/v1/cylinders/GZ0000000001/scans")
    assert [s["kind"] for s in trace.json()["items"]] == ["fill", "dispatch", "deliver"]
    assert [s["status_after"] for s in trace.json()["items"]] == ["filled", "in_transit", "at_user"]


async def test_a_batch_refuses_item_by_item_and_keeps_the_rest(gas: Gas) -> None:
    await register(gas, cylinder(), cylinder("GZ0000000002"))
    result = await scans(
        gas,
        scan("dispatch", "GZ0000000001", minutes_ago=20),  # not filled yet
        fill("GZ0000000002"),
        scan("fill", "GZ0000000404", enterprise_code=STATION, net_mass_kg=14.5),
        scan("recover", "GZ0000000002", minutes_ago=-60),  # an hour ahead of now
    )
    by_index = {r["index"]: r for r in result["results"]}
    assert by_index[0]["code"] == "gas.illegal_scan"
    assert by_index[1]["accepted"] is True
    assert by_index[2]["code"] == "gas.unknown_cylinder"
    assert by_index[3]["code"] == "gas.scan_in_the_future"
    assert result["accepted"] == 1
    assert [r["cylinder_code"] for r in await fetch(gas, "SELECT cylinder_code FROM scans")] == [
        "GZ0000000002"
    ]
    late = await scans(
        gas, fill("GZ0000000001", minutes_ago=60), scan("recover", "GZ0000000002", minutes_ago=90)
    )
    assert [r["code"] for r in late["results"]] == [None, "gas.scan_out_of_order"]


async def test_a_fill_scan_the_check_would_refuse_is_refused(gas: Gas) -> None:
    await register(gas, cylinder(made=date.today() - timedelta(days=365 * 5)))
    result = await scans(gas, fill())
    assert result["results"][0]["code"] == "gas.fill_refused"
    assert "inspection_overdue" in result["results"][0]["detail"]


async def test_a_passed_inspection_extends_the_life_and_moves_the_next_due_date(gas: Gas) -> None:
    made = date.today() - timedelta(days=365 * 8 - 30)
    await register(gas, cylinder(made=made, inspected=made + timedelta(days=365 * 4)))
    before = (await gas.get("/v1/cylinders/GZ0000000001")).json()
    result = await scans(gas, scan("inspect", passed=True, enterprise_code="GZGAS"))
    assert result["accepted"] == 1, result
    after = (await gas.get("/v1/cylinders/GZ0000000001")).json()
    inspected_on = (datetime.now(CITY_TIMEZONE) - timedelta(minutes=10)).date()
    assert after["last_passed_inspection_on"] == inspected_on.isoformat()
    assert after["end_of_life"] > before["end_of_life"]
    assert after["next_inspection_due"] > before["next_inspection_due"]
    assert after["version"] == before["version"] + 1


async def test_recall_finds_every_cylinder_of_a_fill_batch_and_where_it_is(gas: Gas) -> None:
    codes = [f"GZ00000001{n:02d}" for n in range(12)]
    await register(gas, *(cylinder(code) for code in codes), cylinder("GZ0000000999"))
    await scans(
        gas, *(fill(code, batch="TH01-20261202-1") for code in codes), fill("GZ0000000999", batch="OTHER")
    )
    await scans(gas, scan("dispatch", codes[0], minutes_ago=5, enterprise_code=STATION))
    recall = await gas.get("/v1/fill-batches/TH01-20261202-1/cylinders")
    assert recall.status_code == 200
    found = {c["code"]: c["status"] for c in recall.json()["cylinders"]}
    assert set(found) == set(codes)
    assert found[codes[0]] == "in_transit"
    assert found[codes[1]] == "filled"


async def test_a_code_is_never_registered_twice(gas: Gas) -> None:
    await register(gas, cylinder())
    again = await gas.post(
        "/v1/cylinders/import", {"cylinders": [cylinder(), cylinder("GZ0000000002", owner="NOBODY")]}
    )
    assert again.status_code == 200
    assert [(r["index"], r["code"]) for r in again.json()["refused"]] == [
        (0, "gas.code_taken"),
        (1, "gas.unknown_company"),
    ]


async def test_personal_data_is_masked_without_pii_read(gas: Gas) -> None:
    await gas.register_demo()
    created = await gas.post(
        "/v1/users",
        {
            "kind": "household",
            "name": "陈小明",
            "phone": "13800138000",
            "address": "天河区体育西路 100 号",
            "district_code": TIANHE,
        },
        scopes=("gas:read", "gas:write", "pii:read"),
    )
    assert created.json()["name"] == "陈小明"
    masked = (await gas.get(f"/v1/users/{created.json()['id']}", scopes=READER)).json()
    assert masked["name"] != "陈小明"
    assert masked["phone"] != "13800138000"
    assert "13800138000"[3:7] not in (masked["phone"] or "")
    assert masked["address"] != "天河区体育西路 100 号"


async def test_a_district_bound_reader_sees_its_district_only(gas: Gas) -> None:
    await gas.register_demo()
    own = await gas.get(f"/v1/enterprises/{STATION}", scopes=READER, district=TIANHE)
    assert own.status_code == 200
    other = await gas.get(f"/v1/enterprises/{OTHER_STATION}", scopes=READER, district=TIANHE)
    assert other.status_code == 403
    assert other.json()["code"] == "auth.other_district"
    listed = await gas.get("/v1/enterprises", scopes=READER, district=TIANHE)
    assert {e["district_code"] for e in listed.json()["items"]} == {TIANHE}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/fill-checks", {"cylinder_code": "x", "station_code": STATION, "scale_id": "S1"}),
        ("/v1/fill-checks", {"cylinder_code": "GZ0000000001", "station_code": STATION}),
        ("/v1/scans", {"scans": []}),
        (
            "/v1/scans",
            {"scans": [{"cylinder_code": "GZ0000000001", "kind": "fill", "at": "2026-12-01T08:00:00+08:00"}]},
        ),
        ("/v1/scans", {"scans": [{"cylinder_code": "GZ0000000001", "kind": "inspect", "at": "yesterday"}]}),
        ("/v1/cylinders/import", {"cylinders": [{**cylinder(), "last_inspection_passed": True}]}),
        (
            "/v1/enterprises/import",
            {"enterprises": [{"code": "X1", "kind": "filling_station", "name": "n", "licence_number": "l"}]},
        ),
        ("/v1/users", {"kind": "household", "name": "n", "address": "a", "district_code": "999999"}),
    ],
)
async def test_bad_input_is_a_problem_and_writes_nothing(gas: Gas, path: str, body: dict[str, Any]) -> None:
    await gas.register_demo()
    response = await gas.client.post(
        path, json=body, headers=gas.as_(scopes=("gas:read", "gas:write", "gas:ingest"))
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_failed"
    for table in ("fill_checks", "scans", "cylinders", "gas_users"):
        assert await fetch(gas, f"SELECT 1 FROM {table}") == []  # noqa: S608


async def test_unknown_things_are_404_problems(gas: Gas) -> None:
    await gas.register_demo()
    station = await gas.post(
        "/v1/fill-checks",
        {"cylinder_code": "GZ0000000001", "station_code": "NOPE", "scale_id": "S"},
        scopes=SCALE,
        roles=("regulator",),
    )
    assert station.status_code == 404
    assert station.json()["code"] == "gas.unknown_enterprise"
    company = await gas.post(
        "/v1/fill-checks",
        {"cylinder_code": "GZ0000000001", "station_code": "GZGAS", "scale_id": "S"},
        scopes=SCALE,
        roles=("regulator",),
    )
    assert company.status_code == 422
    assert company.json()["code"] == "gas.not_a_station"
    missing = await gas.get("/v1/cylinders/GZ0000000404")
    assert missing.status_code == 404
    assert missing.json()["code"] == "gas.unknown_cylinder"
    user = await gas.get(f"/v1/users/{uuid.uuid4()}")
    assert user.json()["code"] == "gas.unknown_user"


async def test_scopes_guard_each_kind_of_call(gas: Gas) -> None:
    await gas.register_demo()
    reader_writes = await gas.post("/v1/cylinders/import", {"cylinders": [cylinder()]}, scopes=READER)
    assert reader_writes.status_code == 403
    writer_checks = await gas.post(
        "/v1/fill-checks", {"cylinder_code": "GZ0000000001", "station_code": STATION, "scale_id": "S"}
    )
    assert writer_checks.status_code == 403
    assert writer_checks.json()["required_scope"] == "gas:ingest"


async def test_partitions_exist_for_the_accepted_range_and_old_ones_are_dropped(gas: Gas) -> None:
    from services.gas import partitions

    names = {
        r["relname"]
        for r in await fetch(gas, "SELECT relname FROM pg_class WHERE relname ~ '^scans_[0-9]{6}$'")
    }
    today = date.today()
    assert partitions.partition_name("scans", today.replace(day=1)) in names
    first, last = partitions.accepted_range(today)
    assert partitions.partition_name("scans", first.replace(day=1)) in names
    assert partitions.partition_name("scans", last.replace(day=1)) in names
    await fetch(
        gas, "CREATE TABLE scans_200001 PARTITION OF scans FOR VALUES FROM ('2000-01-01') TO ('2000-02-01')"
    )
    dropped = await partitions.drop_expired_partitions(gas.runtime.db, today, 3 * 365)
    assert dropped >= 1
    left = {
        r["relname"] for r in await fetch(gas, "SELECT relname FROM pg_class WHERE relname = 'scans_200001'")
    }
    assert left == set()


async def test_a_credential_without_a_station_may_not_check_and_a_district_keeps_to_its_own(gas: Gas) -> None:
    await register(gas, cylinder())
    body = {"cylinder_code": "GZ0000000001", "station_code": OTHER_STATION, "scale_id": "S1"}
    anonymous_scale = await gas.post("/v1/fill-checks", body, scopes=SCALE)
    assert anonymous_scale.status_code == 403
    assert anonymous_scale.json()["code"] == "gas.not_this_station"
    tianhe_regulator = await gas.post(
        "/v1/fill-checks", body, scopes=SCALE, roles=("regulator",), district=TIANHE
    )
    assert tianhe_regulator.status_code == 403
    assert tianhe_regulator.json()["code"] == "auth.other_district"
    assert await fetch(gas, "SELECT id FROM fill_checks") == []
    assert await violation_events(gas) == []


async def test_a_handset_scans_at_its_own_enterprise_and_only_the_owner_ends_a_life(gas: Gas) -> None:
    await register(gas, cylinder(), cylinder("NF0000000001", owner="NANFANG"))

    async def as_station(*items: dict[str, Any], **who: Any) -> list[dict[str, Any]]:
        response = await gas.post("/v1/scans", {"scans": list(items)}, scopes=SCALE, **who)
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    others = await as_station(scan("void", "NF0000000001"), unit=STATION)
    assert others[0]["code"] == "gas.not_the_owner"
    elsewhere = await as_station(fill("GZ0000000001") | {"enterprise_code": OTHER_STATION}, unit=STATION)
    assert elsewhere[0]["code"] == "gas.not_this_enterprise"
    integration = await as_station(scan("scrap", "GZ0000000001"))
    assert integration[0]["code"] == "gas.not_the_owner"
    regulator = await as_station(scan("report_lost", "NF0000000001"), roles=("regulator",))
    assert regulator[0]["accepted"] is True
    own = await as_station(fill("GZ0000000001"), unit=STATION)
    assert own[0]["accepted"] is True
    states = {r["code"]: r["status"] for r in await fetch(gas, "SELECT code, status FROM cylinders")}
    assert states == {"GZ0000000001": "filled", "NF0000000001": "reported_lost"}
