"""Gas to case, through the gateway: a refused fill becomes one enforcement case however often the
scale asks again; a leak report becomes an urgent case in the emergencies class."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from citygrid.testing import wait_until
from tests.gas_stack import GAS_STATION, GasStack

GAS = "/api/gas/v1"
CASES = "/api/case/v1/cases"
ENTERPRISES = [
    {"code": "GZGAS", "kind": "gas_company", "name": "Guangzhou Gas", "licence_number": "RQ-1"},
    {
        "code": GAS_STATION,
        "kind": "filling_station",
        "name": "Tianhe filling station",
        "company_code": "GZGAS",
        "licence_number": "CZ-1",
        "licence_valid_until": "2030-12-31",
        "district_code": "440106",
        "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
    },
]


async def registered(stack: GasStack, made: date) -> None:
    imported = await stack.client.post(
        f"{GAS}/enterprises/import", json={"enterprises": ENTERPRISES}, headers=stack.as_("registrar")
    )
    assert imported.status_code == 200, imported.text
    cylinder = {
        "code": "GZ0000000003",
        "owner_code": "GZGAS",
        "manufacturer": "Foshan Steel Cylinder Works",
        "serial": "000003",
        "manufactured_on": made.isoformat(),
        "tare_kg": 16.8,
        "capacity_kg": 14.5,
    }
    response = await stack.client.post(
        f"{GAS}/cylinders/import", json={"cylinders": [cylinder]}, headers=stack.as_("registrar")
    )
    assert response.json()["created"] == 1, response.text


async def cases(stack: GasStack) -> list[dict[str, Any]]:
    listed = await stack.client.get(CASES, headers=stack.as_("clerk"))
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_a_refused_fill_becomes_one_enforcement_case(gas_stack: GasStack) -> None:
    await registered(gas_stack, date.today() - timedelta(days=365 * 5))
    check = {"cylinder_code": "GZ0000000003", "station_code": GAS_STATION, "scale_id": "S1"}
    other_station = {**check, "station_code": "NANFANG-ST-BY01"}
    refused = await gas_stack.client.post(
        f"{GAS}/fill-checks", json=other_station, headers=gas_stack.as_("scale")
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "gas.not_this_station"
    for _ in range(3):
        answer = await gas_stack.client.post(f"{GAS}/fill-checks", json=check, headers=gas_stack.as_("scale"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["reasons"] == ["inspection_overdue"]

    async def raised() -> bool:
        return bool(await cases(gas_stack))

    await wait_until(raised, timeout=15)
    (case,) = await cases(gas_stack)
    assert case["category_code"] == "20605"
    assert case["origin"] == {"service": "gas", "reference": answer.json()["case_reference"]}
    assert case["district_code"] == "440106"


async def test_a_leak_report_becomes_an_urgent_case_and_its_drill_goes_in_order(gas_stack: GasStack) -> None:
    report = {
        "premises_type": "mall",
        "source": "pipeline",
        "place": "Tianhe mall, basement level 1",
        "district_code": "440106",
        "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
        "description": "Smell of gas in the ventilation ducts after sewer works nearby.",
        "reporter_name": "李先生",
        "reporter_phone": "13900139000",
    }
    created = await gas_stack.client.post(f"{GAS}/incidents", json=report, headers=gas_stack.as_("responder"))
    assert created.status_code == 201, created.text
    incident = created.json()
    assert incident["next_step"] == "notified"
    assert incident["reporter_phone"] != "13900139000", "masked without pii:read"

    async def raised() -> bool:
        return bool(await cases(gas_stack))

    await wait_until(raised, timeout=15)
    (case,) = await cases(gas_stack)
    assert case["category_code"] == "20406"
    assert case["origin"] == {"service": "gas", "reference": incident["id"]}
    detail = await gas_stack.client.get(f"{CASES}/{case['id']}", headers=gas_stack.as_("clerk"))
    assert "13900139000" not in detail.text

    path = f"{GAS}/incidents/{incident['id']}/steps"
    skipped = await gas_stack.client.post(
        path, json={"step": "ventilated"}, headers=gas_stack.as_("responder")
    )
    assert skipped.status_code == 409
    assert skipped.json()["code"] == "gas.incident_step_out_of_order"
    for step in (
        "notified",
        "evacuated",
        "cordoned",
        "ignition_controlled",
        "ventilated",
        "measured_safe",
        "repaired",
        "closed",
    ):
        taken = await gas_stack.client.post(path, json={"step": step}, headers=gas_stack.as_("responder"))
        assert taken.status_code == 200, taken.text
    final = taken.json()
    assert final["closed_at"] is not None
    drill = ["reported", "notified", "evacuated", "cordoned", "ignition_controlled", "ventilated"]
    assert [s["step"] for s in final["steps"]] == [*drill, "measured_safe", "repaired", "closed"]
    (actor,) = {s["actor"] for s in final["steps"]}
    assert actor.startswith("consumer:"), "each step names who took it"
    listed = await gas_stack.client.get(f"{GAS}/incidents", headers=gas_stack.as_("responder"))
    assert listed.json() == []

    # The case is told the incident is over; it stays where it was for its unit and inspector.
    async def noted() -> list[dict[str, Any]]:
        shown = await gas_stack.client.get(f"{CASES}/{case['id']}", headers=gas_stack.as_("clerk"))
        return [entry for entry in shown.json()["history"] if entry["action"] == "origin_closed"]

    await wait_until(noted, timeout=15)
    (note,) = await noted()
    assert (note["from_status"], note["to_status"]) == (case["status"], case["status"])
    assert incident["id"] in note["note"]
    shown = await gas_stack.client.get(f"{CASES}/{case['id']}", headers=gas_stack.as_("clerk"))
    assert shown.json()["status"] == case["status"]


async def test_a_cylinder_file_larger_than_a_json_body_goes_through_the_gateway(gas_stack: GasStack) -> None:
    imported = await gas_stack.client.post(
        f"{GAS}/enterprises/import", json={"enterprises": ENTERPRISES}, headers=gas_stack.as_("registrar")
    )
    assert imported.status_code == 200
    header = "code,owner_code,manufacturer,serial,manufactured_on,capacity_kg\n"
    rows = "".join(
        f"GZ{n:010d},GZGAS,Foshan Steel Cylinder Works Line {n % 7},S{n},2024-03-01,14.5\n"
        for n in range(30_000)
    )
    body = (header + rows).encode()
    assert len(body) > 2 * 1024 * 1024
    response = await gas_stack.client.post(
        f"{GAS}/cylinders/import-file",
        content=body,
        headers={**gas_stack.as_("registrar"), "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 30_000


async def test_two_responders_pressing_the_same_step_take_it_once(gas_stack: GasStack) -> None:
    import asyncio

    report = {
        "premises_type": "restaurant",
        "source": "cylinder",
        "place": "Tianhe restaurant kitchen",
        "district_code": "440106",
        "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
        "description": "Cylinder valve hissing.",
    }
    created = await gas_stack.client.post(f"{GAS}/incidents", json=report, headers=gas_stack.as_("responder"))
    path = f"{GAS}/incidents/{created.json()['id']}/steps"
    answers = await asyncio.gather(
        *(
            gas_stack.client.post(path, json={"step": "notified"}, headers=gas_stack.as_("responder"))
            for _ in range(8)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 7
    shown = await gas_stack.client.get(
        f"{GAS}/incidents/{created.json()['id']}", headers=gas_stack.as_("responder")
    )
    assert [s["step"] for s in shown.json()["steps"]] == ["reported", "notified"]
