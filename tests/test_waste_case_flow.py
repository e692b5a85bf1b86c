"""Waste to case, through the gateway on real PostgreSQL and NATS: an AI box's fire at a bin becomes
one urgent case, a mixed deposit one case of improper sorting; the same events sent again, or seen
again within their episode, raise nothing more."""

from __future__ import annotations

import uuid
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
CONSUMERS: dict[str, SuiteConsumer] = {
    "box": SuiteConsumer(["waste:ingest"], []),
    "registrar": SuiteConsumer(["waste:read", "waste:write"], []),
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
}


Stack = ServiceStack


@pytest.fixture
async def waste_case_stack(
    infrastructure: Infrastructure, databases: dict[str, str], waste_database: str, clean: None
) -> AsyncIterator[Stack]:
    await truncate_all(waste_database)
    waste_app = create_waste_app(
        WasteSettings(
            **infrastructure.service_settings(WASTE_NATS.user, waste_database),
            jt808_host="127.0.0.1",
            jt808_port=0,
        )
    )
    async with service_with_cases(infrastructure, databases, "waste", waste_app, CONSUMERS) as running:
        yield running


def drop_off_point(code: str, lon: float) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Xiagang {code}",
        "community": "Xiagang",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [lon, 23.10]},
        "opening_hours": ["07:00-09:00", "19:00-21:00"],
        "bins": [
            {"rfid": f"{code}-{stream[:3].upper()}", "stream": stream}
            for stream in ("food", "recyclable", "hazardous", "other")
        ],
    }


def seen(point: str, observed: str, minutes_ago: int, **extra: Any) -> dict[str, Any]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return {
        "id": str(uuid.uuid4()),
        "point_code": point,
        "observed": observed,
        "at": at.isoformat(),
        "confidence": 0.9,
        **extra,
    }


async def cases(stack: Stack) -> list[dict[str, Any]]:
    listed = await stack.client.get(f"{CASES}/cases", headers=stack.as_("clerk"))
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def register(stack: Stack) -> None:
    points = [drop_off_point("HP-XG-0001", 113.471), drop_off_point("HP-XG-0002", 113.485)]
    response = await stack.client.post(
        f"{WASTE}/points/import", json={"points": points}, headers=stack.as_("registrar")
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2, response.text


async def send(stack: Stack, *events: dict[str, Any]) -> list[dict[str, Any]]:
    response = await stack.client.post(
        f"{WASTE}/bin-events", json={"events": list(events)}, headers=stack.as_("box")
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def test_a_fire_at_a_bin_becomes_one_urgent_case(waste_case_stack: Stack) -> None:
    stack = waste_case_stack
    await register(stack)
    fire = seen("HP-XG-0001", "smoke_or_fire", 6, bin_rfid="HP-XG-0001-OTH")
    (first,) = await send(stack, fire)
    assert first["outcome"] == "new"
    # The box resends the batch, then sees the same fire again a minute later.
    assert [r["outcome"] for r in await send(stack, fire, seen("HP-XG-0001", "smoke_or_fire", 5))] == [
        "duplicate",
        "repeat",
    ]

    async def raised() -> bool:
        return bool(await cases(stack))

    await wait_until(raised, timeout=20)
    (case,) = await cases(stack)
    assert case["origin"] == {"service": "waste", "reference": first["violation_id"]}
    assert (case["category_code"], case["district_code"], case["status"]) == ("20405", HUANGPU, "registered")
    category = await stack.client.get(f"{CASES}/categories/20405", headers=stack.as_("clerk"))
    assert category.status_code == 200, category.text
    assert category.json()["urgent"] is True
    violation = await stack.client.get(
        f"{WASTE}/violations/{first['violation_id']}", headers=stack.as_("registrar")
    )
    assert (violation.json()["severity"], violation.json()["stream"]) == ("urgent", "other")
    assert len(await cases(stack)) == 1


async def test_a_mixed_deposit_becomes_one_case_of_improper_sorting(waste_case_stack: Stack) -> None:
    stack = waste_case_stack
    await register(stack)
    (mixed,) = await send(stack, seen("HP-XG-0002", "mixed_deposit", 10, bin_rfid="HP-XG-0002-FOO"))
    # A sighting the box is unsure of raises nothing.
    ignored = await send(stack, seen("HP-XG-0001", "overflow", 3, confidence=0.4))
    assert ignored[0]["outcome"] == "ignored"

    async def raised() -> bool:
        return bool(await cases(stack))

    await wait_until(raised, timeout=20)
    (case,) = await cases(stack)
    assert case["origin"] == {"service": "waste", "reference": mixed["violation_id"]}
    assert case["category_code"] == "20111"
    assert "mixed waste" in case["description"]
    assert (await send(stack, seen("HP-XG-0002", "mixed_deposit", 2)))[0]["outcome"] == "repeat"
    assert len(await cases(stack)) == 1
