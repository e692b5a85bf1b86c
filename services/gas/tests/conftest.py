"""The gas service served on loopback, on real PostgreSQL and NATS, called with gateway-signed tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest

from citygrid.testing import (
    Infrastructure,
    ServiceUnderTest,
    service_factory,
)
from services.gas.events import NATS_IDENTITY
from services.gas.main import GasSettings, create_app

REGISTRAR = ("gas:read", "gas:write")
SCALE = ("gas:ingest",)
READER = ("gas:read",)
STATION = "GZGAS-ST-TH01"
OTHER_STATION = "NANFANG-ST-BY01"
TIANHE = "440106"


class Gas(ServiceUnderTest):
    audience = "gas"
    default_scopes = REGISTRAR

    async def register_demo(self) -> None:
        response = await self.post("/v1/enterprises/import", {"enterprises": enterprises()})
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text


def enterprises(licence_until: date = date(2030, 12, 31)) -> list[dict[str, Any]]:
    return [
        {"code": "GZGAS", "kind": "gas_company", "name": "Guangzhou Gas", "licence_number": "RQ-1"},
        {"code": "NANFANG", "kind": "gas_company", "name": "Nanfang LPG", "licence_number": "RQ-2"},
        {
            "code": STATION,
            "kind": "filling_station",
            "name": "Tianhe filling station",
            "company_code": "GZGAS",
            "licence_number": "CZ-1",
            "licence_valid_until": licence_until.isoformat(),
            "district_code": TIANHE,
            "location": {"type": "Point", "coordinates": [113.3612, 23.1349]},
        },
        {
            "code": OTHER_STATION,
            "kind": "filling_station",
            "name": "Baiyun filling station",
            "company_code": "NANFANG",
            "licence_number": "CZ-2",
            "licence_valid_until": licence_until.isoformat(),
            "district_code": "440111",
            "location": {"type": "Point", "coordinates": [113.2731, 23.1990]},
        },
    ]


def cylinder(
    code: str = "GZ0000000001",
    owner: str = "GZGAS",
    made: date | None = None,
    inspected: date | None = None,
    **changes: Any,
) -> dict[str, Any]:
    made = made or date.today() - timedelta(days=400)
    return {
        "code": code,
        "owner_code": owner,
        "manufacturer": "Foshan Steel Cylinder Works",
        "serial": code[-6:],
        "manufactured_on": made.isoformat(),
        "last_inspected_on": inspected.isoformat() if inspected else None,
        "last_inspection_passed": True if inspected else None,
        "tare_kg": 16.8,
        "capacity_kg": 14.5,
        **changes,
    }


@pytest.fixture(scope="session")
def gas_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.gas")


def gas_settings(infrastructure: Infrastructure, database: str, **overrides: Any) -> GasSettings:
    values = infrastructure.service_settings(NATS_IDENTITY.user, database) | {"figures_seconds": 0.5}
    return GasSettings(**(values | overrides))


@pytest.fixture
async def gas_factory(infrastructure: Infrastructure, gas_database: str):
    return await service_factory(
        infrastructure,
        gas_database,
        lambda **overrides: create_app(gas_settings(infrastructure, gas_database, **overrides)),
        Gas,
    )


@pytest.fixture
async def gas(gas_factory) -> AsyncIterator[Gas]:
    async with gas_factory() as running:
        yield running
