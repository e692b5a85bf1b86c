"""The muck service behind the gateway, on real PostgreSQL and NATS: scopes decide who registers,
who relays positions and who reads them; the demo ``make run`` loads goes through it too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.main import create_app as create_gateway_app
from services.muck.demo import FLEET, plate, seed
from services.muck.events import NATS_IDENTITY as MUCK_NATS
from services.muck.main import MuckSettings
from services.muck.main import create_app as create_muck_app
from tests.conftest import SuiteConsumer, gateway_settings, register_test_consumers

MUCK = "/api/muck/v1"
CONSUMERS: dict[str, SuiteConsumer] = {
    "platform": SuiteConsumer(["muck:ingest"], []),
    "registrar": SuiteConsumer(["muck:read", "muck:write"], []),
    "viewer": SuiteConsumer(["muck:read"], []),
    "tianhe": SuiteConsumer(["muck:read"], [], district="440106"),
    "cases-only": SuiteConsumer(["cases:read"], []),
    "muck-demo": SuiteConsumer(["muck:read", "muck:write", "muck:ingest", "pii:read"], ["regulator"]),
    # Departments reading through the exchange: dataset scopes, one with the drivers' personal data.
    "transport-dept": SuiteConsumer(["drivers:read", "trucks:read", "sites:read", "positions:read"], []),
    "police": SuiteConsumer(["drivers:read", "drivers:pii"], []),
    "tianhe-centre": SuiteConsumer(["sites:read", "positions:read"], [], district="440106"),
}


@dataclass
class MuckStack:
    client: httpx.AsyncClient
    keys: dict[str, str]
    muck_url: str

    def as_(self, consumer: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[consumer]}


@pytest.fixture(scope="session")
def muck_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.muck")


@pytest.fixture
async def muck_stack(
    infrastructure: Infrastructure, databases: dict[str, str], muck_database: str, clean: None
) -> AsyncIterator[MuckStack]:
    await truncate_all(muck_database)
    muck_app = create_muck_app(
        MuckSettings(
            environment="test",
            database_url=muck_database,
            **infrastructure.nats_settings(MUCK_NATS.user),
            internal_token_public_key=infrastructure.public_key,
            jt808_host="127.0.0.1",
            jt808_port=0,
        )
    )
    async with serve_app(muck_app) as muck_url:
        await wait_until(muck_app.state.kit.messaging_ready.is_set)
        settings = gateway_settings(infrastructure, databases, muck_url, upstreams={"muck": muck_url})
        keys = await register_test_consumers(databases["gateway"], CONSUMERS)
        gateway_app = create_gateway_app(settings)
        async with (
            serve_app(gateway_app) as gateway_url,
            httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        ):
            yield MuckStack(client, keys, muck_url)


async def test_the_demo_registers_the_fleet_and_its_positions_through_the_gateway(
    muck_stack: MuckStack,
) -> None:
    headers = muck_stack.as_("muck-demo")
    assert await seed(muck_stack.client, headers) == FLEET + 2 + FLEET * 10
    # Run again (a second `make run`): the register is updated, not doubled.
    await seed(muck_stack.client, headers)
    trucks = (await muck_stack.client.get(f"{MUCK}/trucks?limit=100", headers=headers)).json()["items"]
    assert len(trucks) == FLEET
    latest = (
        await muck_stack.client.get(f"{MUCK}/positions/latest", headers=muck_stack.as_("viewer"))
    ).json()
    assert [item["plate"] for item in latest["items"]] == [plate(n) for n in range(1, FLEET + 1)]


async def test_scopes_decide_who_relays_who_registers_and_who_reads(muck_stack: MuckStack) -> None:
    client = muck_stack.client
    await seed(client, muck_stack.as_("muck-demo"))
    position = {
        "plate": plate(1),
        "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "location": {"type": "Point", "coordinates": [113.36, 23.13]},
    }
    relayed = await client.post(
        f"{MUCK}/positions", json={"positions": [position]}, headers=muck_stack.as_("platform")
    )
    assert relayed.status_code == 200, relayed.text
    assert relayed.json()["stored"] == 1, relayed.text
    # A reader may not relay positions, a platform may not read or register, another dataset neither.
    for consumer, method, path in (
        ("viewer", "POST", "/positions"),
        ("platform", "GET", "/trucks"),
        ("platform", "POST", "/companies/import"),
        ("cases-only", "GET", "/trucks"),
    ):
        response = await client.request(
            method, f"{MUCK}{path}", json={"positions": [position]}, headers=muck_stack.as_(consumer)
        )
        assert response.status_code == 403, (consumer, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    # A district's reader sees its district's sites, never the fleet's positions.
    sites = (await client.get(f"{MUCK}/sites", headers=muck_stack.as_("tianhe"))).json()["items"]
    assert {site["district_code"] for site in sites} == {"440106"}
    assert (await client.get(f"{MUCK}/positions/latest", headers=muck_stack.as_("tianhe"))).status_code == 403
    # A call that did not come through the gateway is refused by the service itself.
    async with httpx.AsyncClient(base_url=muck_stack.muck_url) as direct:
        assert (await direct.get("/v1/trucks")).status_code == 401


async def test_departments_read_the_muck_datasets_through_the_exchange(muck_stack: MuckStack) -> None:
    client = muck_stack.client
    await seed(client, muck_stack.as_("muck-demo"))
    driver = {
        "company_code": "GZJY",
        "name": "李建国",
        "phone": "13912345678",
        "id_number": "440106198001011234",
        "licence_number": "440106198001011234",
    }
    added = await client.post(f"{MUCK}/drivers", json=driver, headers=muck_stack.as_("muck-demo"))
    assert added.status_code == 201, added.text
    # A department with the dataset's scope only (no muck:read) reads it, its drivers masked.
    trucks = await client.get("/exchange/v1/trucks?limit=2", headers=muck_stack.as_("transport-dept"))
    assert trucks.status_code == 200, trucks.text
    assert len(trucks.json()["items"]) == 2
    assert trucks.json()["next_cursor"]
    following = await client.get(
        f"/exchange/v1/trucks?limit=2&cursor={trucks.json()['next_cursor']}",
        headers=muck_stack.as_("transport-dept"),
    )
    assert {t["plate"] for t in following.json()["items"]}.isdisjoint(
        {t["plate"] for t in trucks.json()["items"]}
    )
    masked = (await client.get("/exchange/v1/drivers", headers=muck_stack.as_("transport-dept"))).json()[
        "items"
    ]
    assert [(d["name"], d["phone"], d["id_number"]) for d in masked] == [
        ("李**", "139****5678", "440106********1234")
    ]
    shown = (await client.get("/exchange/v1/drivers", headers=muck_stack.as_("police"))).json()["items"]
    assert [(d["name"], d["phone"]) for d in shown] == [("李建国", "13912345678")]
    # The dataset scope opens that dataset only: not the rest of the muck service, not its writes.
    assert (await client.get("/exchange/v1/manifests", headers=muck_stack.as_("police"))).status_code == 403
    assert (await client.get(f"{MUCK}/drivers", headers=muck_stack.as_("police"))).status_code == 403
    # A district centre reads its district's sites; the fleet's positions stay city-wide only.
    sites = await client.get("/exchange/v1/sites", headers=muck_stack.as_("tianhe-centre"))
    assert {site["district_code"] for site in sites.json()["items"]} == {"440106"}
    positions = await client.get("/exchange/v1/positions", headers=muck_stack.as_("tianhe-centre"))
    assert positions.status_code == 403
    assert positions.headers["content-type"].startswith("application/problem+json")
