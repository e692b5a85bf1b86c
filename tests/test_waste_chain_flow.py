"""The collection chain to a case, through the gateway on real PostgreSQL and NATS: a food truck that
lifts a recyclable bin and unloads at the food plant is one case of irregular collection, its trip
readable with its pickups and weighing; the same records sent again raise nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from citygrid.testing import Infrastructure, truncate_all, wait_until
from services.waste.events import NATS_IDENTITY as WASTE_NATS
from services.waste.main import WasteSettings
from services.waste.main import create_app as create_waste_app
from tests.conftest import (
    CLERK_ROLES,
    CLERK_UNIT,
    ServiceStack,
    SuiteConsumer,
    service_with_cases,
)

WASTE = "/api/waste/v1"
CASES = "/api/case/v1"
HUANGPU = "440112"
TRUCK = "粤A5005F"
PLANT = "HP-FOOD-9"
CONSUMERS: dict[str, SuiteConsumer] = {
    "platform": SuiteConsumer(["waste:ingest"], []),
    "registrar": SuiteConsumer(["waste:read", "waste:write"], []),
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
}


class Stack(ServiceStack):
    async def post(self, consumer: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(f"{WASTE}{path}", json=body, headers=self.as_(consumer))
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def get(self, consumer: str, path: str) -> Any:
        response = await self.client.get(path, headers=self.as_(consumer))
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def waste_chain_stack(
    infrastructure: Infrastructure, databases: dict[str, str], waste_database: str, clean: None
) -> AsyncIterator[Stack]:
    await truncate_all(waste_database)
    waste_app = create_waste_app(
        WasteSettings(
            **infrastructure.service_settings(WASTE_NATS.user, waste_database),
            chain_round_seconds=0.5,
            jt808_host="127.0.0.1",
            jt808_port=0,
        )
    )
    async with service_with_cases(infrastructure, databases, "waste", waste_app, CONSUMERS) as running:
        yield Stack(running.client, running.keys)


async def register(stack: Stack) -> None:
    points = [
        {
            "code": code,
            "name": f"Xiagang {code}",
            "community": "Xiagang",
            "district_code": HUANGPU,
            "location": {"type": "Point", "coordinates": [lon, 23.10]},
            "bins": [
                {"rfid": f"{code}-{stream[:3].upper()}", "stream": stream}
                for stream in ("food", "recyclable")
            ],
        }
        for code, lon in (("HP-XG-0101", 113.471), ("HP-XG-0102", 113.485))
    ]
    vehicle = {
        "plate": TRUCK,
        "kind": "collection",
        "stream": "food",
        "company": "Huangpu Sanitation",
        "district_code": HUANGPU,
        "terminal_phone": "013900005005",
    }
    plant = {
        "code": PLANT,
        "name": "Huangpu food waste treatment plant",
        "kind": "food_waste_treatment",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [113.52, 23.15]},
        "streams": ["food"],
        "weighbridges": ["WB-1"],
    }
    for path, body in (
        ("/points/import", {"points": points}),
        ("/vehicles/import", {"vehicles": [vehicle]}),
        ("/facilities/import", {"facilities": [plant]}),
    ):
        assert (await stack.post("registrar", path, body))["refused"] == []


async def cases(stack: Stack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await stack.get("clerk", f"{CASES}/cases"))["items"]
    return items


async def test_a_mixed_load_becomes_one_case_and_its_trip_reads_back_through_the_gateway(
    waste_chain_stack: Stack,
) -> None:
    stack = waste_chain_stack
    await register(stack)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    pickups = {
        "pickups": [
            {
                "plate": TRUCK,
                "point_code": "HP-XG-0101",
                "rfid": "HP-XG-0101-FOO",
                "weight_kg": 140.0,
                "at": start.isoformat(),
            },
            {
                "plate": TRUCK,
                "point_code": "HP-XG-0102",
                "rfid": "HP-XG-0102-REC",
                "weight_kg": 60.0,
                "at": (start + timedelta(minutes=15)).isoformat(),
            },
        ]
    }
    weighings = {
        "weighings": [
            {
                "facility_code": PLANT,
                "weighbridge": "WB-1",
                "plate": TRUCK,
                "gross_kg": 10_210.0,
                "tare_kg": 10_000.0,
                "at": (start + timedelta(hours=1)).isoformat(),
            }
        ]
    }
    assert (await stack.post("platform", "/pickups", pickups))["stored"] == 2
    assert (await stack.post("platform", "/weighings", weighings))["stored"] == 1

    async def raised() -> bool:
        return bool(await cases(stack))

    await wait_until(raised, timeout=30)
    (case,) = await cases(stack)
    (violation,) = (await stack.get("registrar", f"{WASTE}/chain-violations"))["items"]
    assert case["origin"] == {"service": "waste", "reference": violation["id"]}
    assert (case["category_code"], case["district_code"]) == ("20118", HUANGPU)
    assert TRUCK in case["description"]
    assert violation["kind"] == "mixed_load"

    async def unloaded() -> bool:
        listed = (await stack.get("registrar", f"{WASTE}/trips?plate={TRUCK}&open=false"))["items"]
        return bool(listed)

    # The pickups may have made an open trip in a round before the weighing arrived.
    await wait_until(unloaded, timeout=10)
    (trip,) = (await stack.get("registrar", f"{WASTE}/trips?plate={TRUCK}"))["items"]
    assert (trip["ending"], trip["picked_up_kg"], trip["delivered_kg"]) == ("unloaded", 200.0, 210.0)
    detail = await stack.get("registrar", f"{WASTE}/trips/{trip['id']}")
    assert [p["stream"] for p in detail["pickup_records"]] == ["food", "recyclable"]
    assert detail["weighing"]["net_kg"] == 210.0
    assert [v["id"] for v in detail["violations"]] == [violation["id"]]

    # The platforms were not sure their batches arrived: sent again, stored and raised once.
    assert (await stack.post("platform", "/pickups", pickups))["duplicates"] == 2
    assert (await stack.post("platform", "/weighings", weighings))["duplicates"] == 1
    refused = await stack.client.post(f"{WASTE}/pickups", json=pickups, headers=stack.as_("registrar"))
    assert refused.status_code == 403, refused.text
    await asyncio.sleep(2.0)  # a few rounds of the chain and of the outbox relay
    assert len(await cases(stack)) == 1
