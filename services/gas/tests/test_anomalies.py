"""Anomalies found as scans and checks arrive, and the inspections due per company."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.gas.tests.conftest import SCALE, STATION, Gas, cylinder

BAIYUN_AIRPORT = {"type": "Point", "coordinates": [113.299, 23.392]}
TIANHE = {"type": "Point", "coordinates": [113.3245, 23.1291]}


def at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def scans(gas: Gas, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await gas.post("/v1/scans", {"scans": list(items)}, scopes=SCALE)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def anomalies(gas: Gas, **params: str) -> list[dict[str, Any]]:
    response = await gas.client.get("/v1/anomalies", params=params, headers=gas.as_(scopes=("gas:read",)))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def registered(gas: Gas, *items: dict[str, Any]) -> None:
    await gas.register_demo()
    response = await gas.post("/v1/cylinders/import", {"cylinders": list(items)})
    assert response.json()["refused"] == [], response.text


async def test_a_cylinder_at_two_places_too_fast_is_an_anomaly_and_a_drive_is_not(gas: Gas) -> None:
    await registered(gas, cylinder(), cylinder("GZ0000000002"))
    fills = [
        {
            "cylinder_code": code,
            "kind": "fill",
            "at": at(120),
            "enterprise_code": STATION,
            "net_mass_kg": 14.5,
        }
        for code in ("GZ0000000001", "GZ0000000002")
    ]
    await scans(gas, *fills)
    # The station is in Tianhe; 29 km to the airport in 5 minutes is not a drive, in 100 minutes it is.
    await scans(
        gas,
        {"cylinder_code": "GZ0000000001", "kind": "dispatch", "at": at(115), "location": BAIYUN_AIRPORT},
        {"cylinder_code": "GZ0000000002", "kind": "dispatch", "at": at(20), "location": BAIYUN_AIRPORT},
    )
    (found,) = await anomalies(gas, kind="implausible_travel")
    assert found["cylinder_code"] == "GZ0000000001"
    assert 28_000 < found["details"]["distance_m"] < 32_000
    assert await anomalies(gas, cylinder="GZ0000000002") == []


async def test_a_delivery_to_an_unregistered_user_is_refused_and_recorded(gas: Gas) -> None:
    await registered(gas, cylinder())
    await scans(
        gas,
        {
            "cylinder_code": "GZ0000000001",
            "kind": "fill",
            "at": at(60),
            "enterprise_code": STATION,
            "net_mass_kg": 14.5,
        },
    )
    nobody = str(uuid.uuid4())
    (result,) = await scans(
        gas,
        {
            "cylinder_code": "GZ0000000001",
            "kind": "deliver",
            "at": at(10),
            "user_id": nobody,
            "location": TIANHE,
        },
    )
    assert result["code"] == "gas.unknown_user"
    (found,) = await anomalies(gas, kind="delivery_to_unregistered_user")
    assert found["details"]["user_id"] == nobody


async def test_a_fill_outside_the_owners_network_is_an_anomaly_once_a_day(gas: Gas) -> None:
    await registered(gas, cylinder("NF0000000001", owner="NANFANG"))
    for _ in range(3):
        response = await gas.post(
            "/v1/fill-checks",
            {"cylinder_code": "NF0000000001", "station_code": STATION, "scale_id": "S1"},
            scopes=SCALE,
            unit=STATION,
        )
        assert response.json()["reasons"] == ["not_owned_by_filler"]
    (found,) = await anomalies(gas, kind="filled_outside_network")
    assert found["enterprise_code"] == STATION
    assert found["details"]["owner"] == "NANFANG"


async def test_inspections_due_per_company(gas: Gas) -> None:
    soon = date.today() - timedelta(days=365 * 4 - 10)  # due in about ten days
    later = date.today() - timedelta(days=365 * 2)
    await registered(
        gas,
        cylinder("GZ0000000001", made=soon),
        cylinder("GZ0000000002", made=soon),
        cylinder("GZ0000000003", made=later),
        cylinder("NF0000000001", owner="NANFANG", made=soon),
    )
    response = await gas.client.get(
        "/v1/inspections-due", params={"days": "30"}, headers=gas.as_(scopes=("gas:read",))
    )
    assert response.status_code == 200, response.text
    assert [(row["owner_code"], row["cylinders"]) for row in response.json()] == [
        ("GZGAS", 2),
        ("NANFANG", 1),
    ]
    listed = await gas.client.get(
        "/v1/enterprises/GZGAS/inspections-due",
        params={"days": "30", "limit": "1"},
        headers=gas.as_(scopes=("gas:read",)),
    )
    first = listed.json()
    assert len(first["items"]) == 1
    following = await gas.client.get(
        "/v1/enterprises/GZGAS/inspections-due",
        params={"days": "30", "limit": "1", "cursor": first["next_cursor"]},
        headers=gas.as_(scopes=("gas:read",)),
    )
    assert {first["items"][0]["code"], following.json()["items"][0]["code"]} == {
        "GZ0000000001",
        "GZ0000000002",
    }
    assert following.json()["next_cursor"] is None


async def test_the_retention_deletes_old_rows_and_keeps_recent_ones_and_open_hazards(gas: Gas) -> None:
    import asyncpg

    from citygrid.settings import to_libpq_url
    from citygrid.testing import first_runs_done
    from services.gas import retention

    # The service's own round runs a few seconds after the start: let it pass first.
    await first_runs_done(gas.runtime, "gas-retention")
    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    try:
        for days in (10, 4000):
            await connection.execute(
                "INSERT INTO anomalies (id, kind, cylinder_code, detected_at) VALUES ($1, 'implausible_travel', 'GZ1', now() - make_interval(days => $2))",
                uuid.uuid4(),
                days,
            )
            await connection.execute(
                "INSERT INTO capture_jobs (id, created_at, captured_by) VALUES ($1, now() - make_interval(days => $2), 'x')",
                f"cap-{days}",
                days,
            )
        deleted = await retention.purge_once(gas.runtime.db, record_days=3 * 365)
        assert deleted == 2
        assert await connection.fetchval("SELECT count(*) FROM anomalies") == 1
        assert await connection.fetchval("SELECT id FROM capture_jobs") == "cap-10"
        assert await retention.purge_once(gas.runtime.db, record_days=3 * 365) == 0
    finally:
        await connection.close()


async def test_closed_incidents_go_with_their_steps_after_five_years_and_open_ones_stay(gas: Gas) -> None:
    import asyncpg

    from citygrid.settings import to_libpq_url
    from services.gas import retention

    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    old, recent = 6 * 365, 30
    try:
        await connection.execute(
            "INSERT INTO enterprises (code, kind, name, licence_number) VALUES ('ST-R', 'station', 'S', 'L')"
        )
        for days in (old, recent):
            await connection.execute(
                "INSERT INTO station_locks (id, station_code, locked, reason, actor, at)"
                " VALUES ($1, 'ST-R', true, 'r', 'regulator-1', now() - make_interval(days => $2))",
                uuid.uuid4(),
                days,
            )
            await connection.execute(
                "INSERT INTO outreach_activities (id, district_code, held_on, place, topic, attendance,"
                " organiser, recorded_by, created_at) VALUES ($1, '440106', current_date, 'p', 't', 10,"
                " 'o', 'r', now() - make_interval(days => $2))",
                uuid.uuid4(),
                days,
            )
        # Closed six years ago, closed last month, and reported six years ago but still open.
        incidents = {"closed_long_ago": (old, old), "closed_recently": (old, recent), "open": (old, None)}
        ids = {}
        for name, (reported, closed) in incidents.items():
            ids[name] = uuid.uuid4()
            await connection.execute(
                "INSERT INTO incidents (id, step, premises_type, source, place, district_code, lon, lat,"
                " description, reported_at, closed_at) VALUES ($1, 'closed', 'restaurant', 'cylinder', 'p',"
                " '440106', 113.3, 23.1, 'd', now() - make_interval(days => $2),"
                " now() - make_interval(days => $3::int))",
                ids[name],
                reported,
                closed,
            )
            for _ in range(3):
                await connection.execute(
                    "INSERT INTO incident_steps (id, incident_id, step, at, actor)"
                    " VALUES ($1, $2, 'notified', now() - make_interval(days => $3), 'responder-1')",
                    uuid.uuid4(),
                    ids[name],
                    reported,
                )
        # record_days 3 years for the lock trail; the safety records keep five.
        while await retention.purge_once(gas.runtime.db, record_days=3 * 365):
            pass
        assert await connection.fetchval("SELECT count(*) FROM station_locks") == 1
        assert await connection.fetchval("SELECT count(*) FROM outreach_activities") == 1
        left = await connection.fetch("SELECT id FROM incidents")
        assert {row["id"] for row in left} == {ids["closed_recently"], ids["open"]}
        steps = await connection.fetch("SELECT incident_id, count(*) FROM incident_steps GROUP BY 1")
        assert {row["incident_id"]: row["count"] for row in steps} == {
            ids["closed_recently"]: 3,
            ids["open"]: 3,
        }
    finally:
        await connection.close()
