"""Fixture of the gas flows: case and gas behind one gateway, on real PostgreSQL and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from citygrid.testing import Infrastructure, serve_app, truncate_all, wait_until
from gateway.main import create_app as create_gateway_app
from services.case.main import create_app as create_case_app
from services.gas.events import NATS_IDENTITY as GAS_NATS
from services.gas.main import GasSettings
from services.gas.main import create_app as create_gas_app
from tests.conftest import (
    CLERK_ROLES,
    CLERK_UNIT,
    SuiteConsumer,
    case_settings,
    gateway_settings,
    register_test_consumers,
)

GAS_STATION = "GZGAS-ST-TH01"
# name → (scopes, roles)
GAS_CONSUMERS: dict[str, SuiteConsumer] = {
    # A station's scale: it may ask for its own station only (its unit).
    "scale": SuiteConsumer(["gas:ingest"], [], unit=GAS_STATION),
    "registrar": SuiteConsumer(["gas:read", "gas:write"], []),
    "regulator": SuiteConsumer(["gas:read", "gas:write"], ["regulator"]),
    "responder": SuiteConsumer(["gas:read", "gas:write"], ["operator"], district="440106"),
    "gas-viewer": SuiteConsumer(["gas:read"], []),
    # What the demo consumer of ``make run`` may do in the gas service.
    "gas-demo": SuiteConsumer(["gas:read", "gas:write", "gas:ingest", "pii:read"], ["regulator"]),
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
}


@dataclass
class GasStack:
    infrastructure: Infrastructure
    gateway_url: str
    client: httpx.AsyncClient
    api_keys: dict[str, str]
    case_app: FastAPI
    gas_app: FastAPI

    def as_(self, consumer: str, **headers: str) -> dict[str, str]:
        return {"X-API-Key": self.api_keys[consumer], **headers}


@pytest.fixture(scope="session")
def gas_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.gas")


@pytest.fixture
async def gas_stack(
    infrastructure: Infrastructure, databases: dict[str, str], gas_database: str, clean: None
) -> AsyncIterator[GasStack]:
    await truncate_all(gas_database)
    case_app = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(case_app) as case_url:
        gas_app = create_gas_app(
            GasSettings(
                environment="test",
                database_url=gas_database,
                **infrastructure.nats_settings(GAS_NATS.user),
                internal_token_public_key=infrastructure.public_key,
                outbox_poll_seconds=0.2,
            )
        )
        async with serve_app(gas_app) as gas_url:
            settings = gateway_settings(
                infrastructure, databases, case_url, upstreams={"case": case_url, "gas": gas_url}
            )
            keys = await register_test_consumers(databases["gateway"], GAS_CONSUMERS)
            async with (
                serve_app(create_gateway_app(settings)) as gateway_url,
                httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as client,
            ):
                running = GasStack(infrastructure, gateway_url, client, keys, case_app, gas_app)
                await wait_until(gas_app.state.kit.messaging_ready.is_set)
                await wait_until(case_app.state.kit.messaging_ready.is_set)
                yield running
