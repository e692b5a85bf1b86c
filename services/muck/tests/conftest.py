"""The muck service served on loopback, on real PostgreSQL and NATS, called with gateway-signed tokens,
its JT/T 808 listener on a port of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest

from citygrid.jt808.server import Jt808Listener
from citygrid.testing import (
    Infrastructure,
    ServiceUnderTest,
    service_factory,
)
from services.muck.events import NATS_IDENTITY
from services.muck.main import MuckSettings, create_app

REGISTRAR = ("muck:read", "muck:write")
PLATFORM = ("muck:ingest",)
READER = ("muck:read",)
COMPANY = "GZJY"
TIANHE = "440106"


class Muck(ServiceUnderTest):
    audience = "muck"
    default_scopes = REGISTRAR

    @property
    def listener(self) -> Jt808Listener:
        listener: Jt808Listener = self.app.state.jt808
        return listener

    async def register_fleet(self, trucks: int = 3) -> list[dict[str, Any]]:
        company = {"code": COMPANY, "name": "Jianyun Transport", "licence_number": "ZT-1"}
        assert (await self.post("/v1/companies/import", {"companies": [company]})).status_code == 200
        fleet = [truck(number) for number in range(1, trucks + 1)]
        response = await self.post("/v1/trucks/import", {"trucks": fleet})
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text
        return fleet


def truck(number: int, **changes: Any) -> dict[str, Any]:
    return {
        "plate": f"粤A{number:05d}D",
        "company_code": COMPANY,
        "terminal_phone": f"0138{number:08d}",
        "approval_number": f"ZT-{number:04d}",
        "approval_valid_until": (date.today() + timedelta(days=365)).isoformat(),
        "capacity_m3": 18.0,
        **changes,
    }


@pytest.fixture(scope="session")
def muck_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.muck")


def muck_settings(infrastructure: Infrastructure, database: str, **overrides: Any) -> MuckSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database,
        **infrastructure.nats_settings(NATS_IDENTITY.user),
        "internal_token_public_key": infrastructure.public_key,
        "outbox_poll_seconds": 0.2,
        "jt808_host": "127.0.0.1",
        "jt808_port": 0,
    }
    return MuckSettings(**(values | overrides))


@pytest.fixture
async def muck_factory(infrastructure: Infrastructure, muck_database: str):
    return await service_factory(
        infrastructure,
        muck_database,
        lambda **overrides: create_app(muck_settings(infrastructure, muck_database, **overrides)),
        Muck,
    )


@pytest.fixture
async def muck(muck_factory) -> AsyncIterator[Muck]:
    async with muck_factory() as running:
        yield running
