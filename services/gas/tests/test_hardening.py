"""Inputs that once reached a 500, what a caller without pii:read sees of a household, and retried
reports: each a clear 4xx or the same answer, nothing half-written."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from citygrid.settings import to_libpq_url
from services.gas.tests.conftest import SCALE, STATION, TIANHE, Gas, cylinder

INGEST = ("gas:read", "gas:ingest")
REPORT = {
    "premises_type": "household",
    "source": "cylinder",
    "place": "天河区体育西路 100 号 5 楼",
    "district_code": TIANHE,
    "location": {"type": "Point", "coordinates": [113.324512, 23.137145]},
    "description": "Smell of gas in the kitchen, call 13900139000",
}


async def count(gas: Gas, table: str) -> int:
    connection = await asyncpg.connect(to_libpq_url(gas.runtime.settings.database_url))
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
    finally:
        await connection.close()


def at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def test_a_verdict_on_a_scan_that_is_no_inspection_is_refused(gas: Gas) -> None:
    await gas.register_demo()
    response = await gas.post(
        "/v1/scans",
        {"scans": [{"cylinder_code": "GZ0000000001", "kind": "scrap", "at": at(5), "passed": False}]},
        scopes=SCALE,
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


async def test_a_leak_report_too_long_for_its_case_is_refused_not_lost(gas: Gas) -> None:
    await gas.register_demo()
    response = await gas.post("/v1/incidents", REPORT | {"description": "x" * 3801})
    assert response.status_code == 422
    assert await count(gas, "incidents") == 0
    fits = await gas.post("/v1/incidents", REPORT | {"description": "x" * 3800})
    assert fits.status_code == 201, fits.text


async def test_a_retried_leak_report_opens_one_incident(gas: Gas) -> None:
    await gas.register_demo()
    key = str(uuid.uuid4())
    headers = {**gas.as_(), "Idempotency-Key": key}
    first = await gas.client.post("/v1/incidents", json=REPORT, headers=headers)
    again = await gas.client.post("/v1/incidents", json=REPORT, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert await count(gas, "incidents") == 1
    assert await count(gas, "outbox") == 1


async def test_a_household_is_not_located_without_pii_read(gas: Gas) -> None:
    await gas.register_demo()
    await gas.post("/v1/cylinders/import", {"cylinders": [cylinder()]})
    user = await gas.post(
        "/v1/users",
        {"kind": "household", "name": "陈小明", "address": "体育西路 100 号", "district_code": TIANHE},
    )
    walk = [
        {
            "cylinder_code": "GZ0000000001",
            "kind": "fill",
            "at": at(30),
            "enterprise_code": STATION,
            "net_mass_kg": 14.5,
        },
        {
            "cylinder_code": "GZ0000000001",
            "kind": "deliver",
            "at": at(10),
            "user_id": user.json()["id"],
            "location": {"type": "Point", "coordinates": [113.324512, 23.137145]},
        },
    ]
    assert (await gas.post("/v1/scans", {"scans": walk}, scopes=SCALE)).json()["accepted"] == 2
    reader = ("gas:read",)
    seen = (await gas.get("/v1/cylinders/GZ0000000001", scopes=reader)).json()
    assert seen["holder_id"] is None
    assert seen["last_location"]["coordinates"] == [113.325, 23.137]
    trace = (await gas.get("/v1/cylinders/GZ0000000001/scans", scopes=reader)).json()["items"]
    assert trace[1]["user_id"] is None
    assert trace[1]["location"]["coordinates"] == [113.325, 23.137]
    full = (await gas.get("/v1/cylinders/GZ0000000001", scopes=(*reader, "pii:read"))).json()
    assert full["holder_id"] == user.json()["id"]
    incident = (await gas.post("/v1/incidents", REPORT)).json()
    shown = (await gas.get(f"/v1/incidents/{incident['id']}", scopes=reader)).json()
    assert shown["place"] != REPORT["place"]
    assert "13900139000" not in shown["description"]
    assert shown["location"]["coordinates"] == [113.325, 23.137]


async def epcis(gas: Gas, document: Any) -> int:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    response = await gas.client.post(
        "/v1/epcis/capture",
        content=body,
        headers={**gas.as_(scopes=INGEST), "content-type": "application/json"},
    )
    return response.status_code


def one_event(**changes: Any) -> dict[str, Any]:
    event = {
        "type": "ObjectEvent",
        "eventTime": "2026-11-30T09:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "action": "OBSERVE",
        "bizStep": "shipping",
        **changes,
    }
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-30T09:00:00+08:00",
        "epcisBody": {"eventList": [event]},
    }


async def test_epcis_input_a_database_cannot_keep_is_refused(gas: Gas) -> None:
    await gas.register_demo()
    assert await epcis(gas, one_event(**{"example:note": "a\u0000b"})) == 400
    assert (
        await epcis(gas, one_event(eventTime="9999-12-31T23:59:59-14:00", eventTimeZoneOffset="-14:00"))
        == 400
    )
    assert await epcis(gas, one_event(eventID="urn:uuid:" + "a" * 600)) == 400
    assert await epcis(gas, b'{"type": "EPCISDocument", "x": "\\ud800"}') == 400
    assert await count(gas, "epcis_events") == 0
    for parameters in ({"perPage": "²"}, {"GE_eventTime": "0001-01-01T00:00:00+14:00"}):
        response = await gas.client.get(
            "/v1/epcis/events", params=parameters, headers=gas.as_(scopes=("gas:read",))
        )
        assert response.status_code == 400, parameters


async def test_odd_paths_and_forged_cursors_are_4xx(gas: Gas) -> None:
    await gas.register_demo()
    await gas.post("/v1/cylinders/import", {"cylinders": [cylinder()]})
    assert (await gas.get("/v1/fill-batches/%00/cylinders")).status_code == 422
    assert (await gas.get("/v1/epcis/capture/%00", scopes=("gas:read",))).status_code == 422
    from citygrid.pagination import encode_cursor

    forged = encode_cursor("0001-01-01T00:00:00+14:00", str(uuid.uuid4()))
    history = await gas.client.get(
        "/v1/cylinders/GZ0000000001/scans", params={"cursor": forged}, headers=gas.as_()
    )
    assert history.status_code == 400
    assert history.json()["code"] == "pagination.invalid_cursor"
    anomalies = await gas.client.get("/v1/anomalies", params={"cursor": forged}, headers=gas.as_())
    assert anomalies.status_code == 400
    assert anomalies.json()["code"] == "pagination.invalid_cursor"
