"""The EPCIS 2.0 capture and query interfaces on real PostgreSQL: our own scans captured and read
back, all-or-nothing capture, paging and refused parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.gas.epcis.mapping import MappedScan, epcis_document, scan_to_object_event
from services.gas.tests.conftest import STATION, Gas, cylinder

INGEST = ("gas:read", "gas:ingest")
STATION_URN = f"urn:citygrid:enterprise:{STATION}"


async def registered(gas: Gas, *codes: str) -> None:
    await gas.register_demo()
    response = await gas.post("/v1/cylinders/import", {"cylinders": [cylinder(code) for code in codes]})
    assert response.json()["created"] == len(codes), response.text


def event(
    kind: str, code: str, minutes_ago: float, event_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).astimezone()
    return scan_to_object_event(
        MappedScan(kind=kind, cylinder_codes=(code,), at=at, event_id=event_id, **fields)
    )


def fill(code: str, minutes_ago: float = 30, event_id: str | None = None) -> dict[str, Any]:
    return event(
        "fill", code, minutes_ago, event_id, read_point=STATION_URN, biz_location=None, net_mass_kg=14.5
    )


def dispatch(code: str, minutes_ago: float = 20, event_id: str | None = None) -> dict[str, Any]:
    return event("dispatch", code, minutes_ago, event_id, read_point=STATION_URN, biz_location=None)


async def capture(gas: Gas, events: list[dict[str, Any]], behaviour: str | None = None) -> httpx.Response:
    document = epcis_document(events, created_at=datetime.now(UTC))
    headers = {**gas.as_(scopes=INGEST), "content-type": "application/ld+json"}
    if behaviour:
        headers["GS1-Capture-Error-Behaviour"] = behaviour
    return await gas.client.post("/v1/epcis/capture", content=json.dumps(document), headers=headers)


async def query(gas: Gas, **parameters: str) -> httpx.Response:
    return await gas.client.get("/v1/epcis/events", params=parameters, headers=gas.as_(scopes=("gas:read",)))


async def test_our_scans_are_captured_and_read_back_with_their_event_ids(gas: Gas) -> None:
    await registered(gas, "GZ0000000001")
    response = await capture(
        gas,
        [
            fill("GZ0000000001", event_id="urn:uuid:6f1b8e8a-0000-4000-8000-000000000001"),
            dispatch("GZ0000000001"),
        ],
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"].startswith("/v1/epcis/capture/cap-")
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0"
    job = await gas.client.get(response.headers["location"], headers=gas.as_(scopes=("gas:read",)))
    assert job.json()["success"] is True
    assert job.json()["running"] is False
    state = (await gas.get("/v1/cylinders/GZ0000000001")).json()
    assert state["status"] == "in_transit"
    found = await query(gas, MATCH_epc="urn:citygrid:cylinder:GZ0000000001")
    assert found.status_code == 200, found.text
    document = found.json()
    assert document["type"] == "EPCISQueryDocument"
    events = document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert [e["bizStep"] for e in events] == ["urn:citygrid:bizstep:filling", "shipping"]
    assert events[0]["eventID"] == "urn:uuid:6f1b8e8a-0000-4000-8000-000000000001"
    assert events[0]["urn:citygrid:netMassKg"] == 14.5
    again = await capture(
        gas, [fill("GZ0000000001", event_id="urn:uuid:6f1b8e8a-0000-4000-8000-000000000001")]
    )
    assert again.status_code == 202
    assert again.json()["success"] is True, "the same event sent again is skipped"
    scans = (await gas.get("/v1/cylinders/GZ0000000001/scans")).json()["items"]
    assert len(scans) == 2


async def test_rollback_stores_nothing_and_proceed_keeps_the_good_events(gas: Gas) -> None:
    await registered(gas, "GZ0000000001", "GZ0000000002")
    document = [fill("GZ0000000001"), dispatch("GZ0000000002")]  # the second was never filled
    rolled = await capture(gas, document)
    assert rolled.status_code == 202
    assert rolled.json()["success"] is False
    assert rolled.json()["errors"][0]["eventIndex"] == 1
    assert rolled.json()["errors"][0]["code"] == "gas.illegal_scan"
    assert (await gas.get("/v1/cylinders/GZ0000000001")).json()["status"] == "in_stock"
    proceeded = await capture(gas, document, behaviour="proceed")
    assert proceeded.json()["success"] is False
    assert (await gas.get("/v1/cylinders/GZ0000000001")).json()["status"] == "filled"
    assert (await gas.get("/v1/cylinders/GZ0000000002")).json()["status"] == "in_stock"


async def test_an_event_of_another_asset_is_kept_whole_and_queryable(gas: Gas) -> None:
    await gas.register_demo()
    foreign = {
        "type": "ObjectEvent",
        "eventTime": "2026-11-30T09:00:00+08:00",
        "eventTimeZoneOffset": "+08:00",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017"],
        "action": "OBSERVE",
        "bizStep": "shipping",
        "eventID": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
    }
    response = await capture(gas, [foreign])
    assert response.json()["success"] is True, response.text
    found = await query(gas, MATCH_epc="urn:epc:id:sgtin:0614141.107346.2017")
    (kept,) = found.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert kept["eventID"] == foreign["eventID"]
    assert kept["epcList"] == foreign["epcList"]
    assert (await query(gas, EQ_bizStep="shipping")).json()["epcisBody"]["queryResults"]["resultsBody"][
        "eventList"
    ]


async def test_pages_follow_the_next_page_token(gas: Gas) -> None:
    codes = [f"GZ00000002{n:02d}" for n in range(7)]
    await registered(gas, *codes)
    assert (await capture(gas, [fill(code, minutes_ago=60 - n) for n, code in enumerate(codes)])).json()[
        "success"
    ]
    seen: list[str] = []
    response = await query(gas, perPage="3")
    while True:
        events = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        seen.extend(e["epcList"][0] for e in events)
        if "link" not in response.headers:
            break
        target = response.headers["link"].split(";")[0].strip("<>")
        response = await gas.client.get(target, headers=gas.as_(scopes=("gas:read",)))
    assert seen == [f"urn:citygrid:cylinder:{code}" for code in codes]


async def test_refused_documents_parameters_and_media_types(gas: Gas) -> None:
    await registered(gas, "GZ0000000001")
    broken = epcis_document([fill("GZ0000000001")], created_at=datetime.now(UTC))
    del broken["schemaVersion"]
    response = await gas.client.post(
        "/v1/epcis/capture",
        content=json.dumps(broken),
        headers={**gas.as_(scopes=INGEST), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["type"] == "epcisException:ValidationException"
    assert (await gas.get("/v1/cylinders/GZ0000000001")).json()["status"] == "in_stock"
    plain = await gas.client.post(
        "/v1/epcis/capture", content=b"x", headers={**gas.as_(scopes=INGEST), "content-type": "text/plain"}
    )
    assert plain.status_code == 415
    unknown = await query(gas, GE_eventDate="2026-01-01T00:00:00Z")
    assert unknown.status_code == 400
    assert unknown.json()["type"] == "epcisException:QueryParameterException"
    bad_time = await query(gas, GE_eventTime="not-a-date")
    assert bad_time.status_code == 400
    options = await gas.client.options("/v1/epcis/capture", headers=gas.as_(scopes=("gas:read",)))
    assert options.headers["GS1-EPCIS-Capture-Limit"] == "1000"
    reader = await gas.client.post(
        "/v1/epcis/capture",
        content=json.dumps(broken),
        headers={**gas.as_(scopes=("gas:read", "gas:write")), "content-type": "application/json"},
    )
    assert reader.status_code == 403


async def test_the_same_event_captured_at_once_on_two_replicas_is_one_scan(gas_factory) -> None:
    import asyncio

    async with gas_factory() as one, gas_factory() as two:
        await registered(one, "GZ0000000001")
        # An inspection can be taken again and again: only the event id tells a resend from a new one.
        same = event(
            "inspect",
            "GZ0000000001",
            30,
            "urn:uuid:6f1b8e8a-0000-4000-8000-0000000000f1",
            read_point="urn:citygrid:enterprise:GZGAS",
            biz_location=None,
            passed=True,
        )
        answers = await asyncio.gather(*(capture(replica, [same]) for replica in (one, two) * 3))
        assert all(answer.status_code == 202 and answer.json()["success"] for answer in answers)
        twice_in_one = await capture(one, [same, same])
        assert twice_in_one.status_code == 202
        scans = (await one.get("/v1/cylinders/GZ0000000001/scans")).json()["items"]
        assert len(scans) == 1
        events = (await query(one)).json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        assert [e["eventID"] for e in events] == ["urn:uuid:6f1b8e8a-0000-4000-8000-0000000000f1"]
