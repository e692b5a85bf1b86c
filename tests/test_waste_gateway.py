"""The waste service behind the gateway, on real PostgreSQL and NATS: scopes decide who registers,
whose boxes send events and who reads; a district's key sees its district; personal data is masked
without ``pii:read``; the demo ``make run`` loads goes through it too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.main import create_app as create_gateway_app
from services.waste.demo import point_code, seed
from services.waste.events import NATS_IDENTITY as WASTE_NATS
from services.waste.main import WasteSettings
from services.waste.main import create_app as create_waste_app
from tests.conftest import SuiteConsumer, gateway_settings, register_test_consumers

WASTE = "/api/waste/v1"
CONSUMERS: dict[str, SuiteConsumer] = {
    "box": SuiteConsumer(["waste:ingest"], []),
    "registrar": SuiteConsumer(["waste:read", "waste:write"], []),
    "viewer": SuiteConsumer(["waste:read"], []),
    "huangpu": SuiteConsumer(["waste:read"], [], district="440112"),
    "tianhe": SuiteConsumer(["waste:read"], [], district="440106"),
    "tianhe-box": SuiteConsumer(["waste:ingest"], [], district="440106"),
    "cases-only": SuiteConsumer(["cases:read"], []),
    "waste-demo": SuiteConsumer(["waste:read", "waste:write", "waste:ingest", "pii:read"], ["regulator"]),
}


@dataclass
class WasteStack:
    client: httpx.AsyncClient
    keys: dict[str, str]
    waste_url: str

    def as_(self, consumer: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[consumer]}


@pytest.fixture
async def waste_stack(
    infrastructure: Infrastructure, databases: dict[str, str], waste_database: str, clean: None
) -> AsyncIterator[WasteStack]:
    await truncate_all(waste_database)
    waste_app = create_waste_app(
        WasteSettings(
            environment="test",
            database_url=waste_database,
            **infrastructure.nats_settings(WASTE_NATS.user),
            internal_token_public_key=infrastructure.public_key,
            jt808_host="127.0.0.1",
            jt808_port=0,
        )
    )
    async with serve_app(waste_app) as waste_url:
        await wait_until(waste_app.state.kit.messaging_ready.is_set)
        settings = gateway_settings(infrastructure, databases, waste_url, upstreams={"waste": waste_url})
        keys = await register_test_consumers(databases["gateway"], CONSUMERS)
        async with (
            serve_app(create_gateway_app(settings)) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        ):
            yield WasteStack(client, keys, waste_url)


async def test_the_demo_registers_huangpus_points_and_sends_its_events_through_the_gateway(
    waste_stack: WasteStack,
) -> None:
    headers = waste_stack.as_("waste-demo")
    # Six points, a collection point, four vehicles, three facilities, a depot, two routes, one
    # violation.
    assert await seed(waste_stack.client, headers) == 6 + 1 + 4 + 3 + 1 + 2 + 1
    # Run again (a second `make run`): the register is updated, the events are duplicates.
    assert await seed(waste_stack.client, headers) == 0
    points = (await waste_stack.client.get(f"{WASTE}/points?limit=100", headers=headers)).json()["items"]
    assert [p["code"] for p in points] == [point_code(n) for n in range(1, 7)]
    (violation,) = (await waste_stack.client.get(f"{WASTE}/violations", headers=headers)).json()["items"]
    assert (violation["kind"], violation["point_code"], violation["stream"]) == (
        "mixed_deposit",
        point_code(2),
        "food",
    )
    routes = (await waste_stack.client.get(f"{WASTE}/routes", headers=headers)).json()["items"]
    assert {r["code"] for r in routes} == {"HP-R-FOOD-01", "HP-R-OTHER-01"}


async def test_scopes_decide_who_registers_whose_boxes_send_and_who_reads(waste_stack: WasteStack) -> None:
    client = waste_stack.client
    await seed(client, waste_stack.as_("waste-demo"))
    event = {
        "id": str(uuid.uuid4()),
        "point_code": point_code(3),
        "observed": "overflow",
        "at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "confidence": 0.95,
    }
    sent = await client.post(f"{WASTE}/bin-events", json={"events": [event]}, headers=waste_stack.as_("box"))
    assert sent.status_code == 200, sent.text
    assert sent.json()["results"][0]["outcome"] == "new"
    for consumer, method, path in (
        ("viewer", "POST", "/bin-events"),
        ("box", "GET", "/violations"),
        ("box", "POST", "/points/import"),
        ("viewer", "POST", "/vehicles/import"),
        ("cases-only", "GET", "/points"),
    ):
        response = await client.request(
            method, f"{WASTE}{path}", json={"events": [event]}, headers=waste_stack.as_(consumer)
        )
        assert response.status_code == 403, (consumer, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "auth.missing_scope"


async def test_a_districts_key_sees_and_sends_for_its_district_only(waste_stack: WasteStack) -> None:
    client = waste_stack.client
    await seed(client, waste_stack.as_("waste-demo"))
    huangpu = (await client.get(f"{WASTE}/violations", headers=waste_stack.as_("huangpu"))).json()["items"]
    assert [v["district_code"] for v in huangpu] == ["440112"]
    assert (await client.get(f"{WASTE}/violations", headers=waste_stack.as_("tianhe"))).json()["items"] == []
    refused = await client.get(f"{WASTE}/violations/{huangpu[0]['id']}", headers=waste_stack.as_("tianhe"))
    assert (refused.status_code, refused.json()["code"]) == (403, "auth.other_district")
    other = await client.get(f"{WASTE}/points/{point_code(1)}", headers=waste_stack.as_("tianhe"))
    assert other.status_code == 403
    event = {
        "id": str(uuid.uuid4()),
        "point_code": point_code(1),
        "observed": "overflow",
        "at": datetime.now(UTC).isoformat(),
        "confidence": 0.95,
    }
    sent = await client.post(
        f"{WASTE}/bin-events", json={"events": [event]}, headers=waste_stack.as_("tianhe-box")
    )
    assert sent.json()["results"][0]["reason"] == "auth.other_district"


async def test_contacts_and_drivers_are_masked_without_pii_read(waste_stack: WasteStack) -> None:
    client = waste_stack.client
    await seed(client, waste_stack.as_("waste-demo"))
    shown = (await client.get(f"{WASTE}/points/{point_code(1)}", headers=waste_stack.as_("viewer"))).json()
    assert (shown["contact_name"], shown["contact_phone"]) == ("陈**", "138****0001")
    vehicles = (await client.get(f"{WASTE}/vehicles", headers=waste_stack.as_("viewer"))).json()["items"]
    assert {(v["driver_name"], v["terminal_phone"]) for v in vehicles} == {("刘**", None)}
    revealed = (await client.get(f"{WASTE}/vehicles", headers=waste_stack.as_("waste-demo"))).json()["items"]
    assert {v["driver_name"] for v in revealed} == {"刘建国"}


async def test_a_call_that_did_not_come_through_the_gateway_is_refused(waste_stack: WasteStack) -> None:
    async with httpx.AsyncClient(base_url=waste_stack.waste_url) as direct:
        for path in ("/v1/points", "/v1/violations"):
            assert (await direct.get(path)).status_code == 401
        posted = await direct.post("/v1/bin-events", json={"events": []})
        assert posted.status_code == 401
