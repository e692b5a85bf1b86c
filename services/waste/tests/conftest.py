"""The waste service served on loopback, on real PostgreSQL and NATS, called with gateway-signed
tokens; a few Huangpu drop-off points and the rest of the register to start from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from citygrid.testing import (
    Infrastructure,
    ServiceUnderTest,
    service_factory,
)
from services.waste.events import NATS_IDENTITY
from services.waste.main import WasteSettings, create_app

REGISTRAR = ("waste:read", "waste:write")
BOX = ("waste:ingest",)
READER = ("waste:read",)
HUANGPU = "440112"
TIANHE = "440106"
CAMERA = "44011200081310000001"


class Waste(ServiceUnderTest):
    audience = "waste"
    default_scopes = REGISTRAR

    async def register_points(self, *points: dict[str, Any]) -> None:
        response = await self.post("/v1/points/import", {"points": list(points or (point("HP-0001"),))})
        assert response.status_code == 200, response.text
        assert response.json()["refused"] == [], response.text


def point(code: str, district: str = HUANGPU, **changes: Any) -> dict[str, Any]:
    number = int(code.rsplit("-", 1)[-1])
    return {
        "code": code,
        "name": f"Xiagang {number}",
        "community": "Xiagang",
        "district_code": district,
        "location": {"type": "Point", "coordinates": [round(113.48 + number / 1000, 6), 23.11]},
        "address": f"Xiagang Road {number}",
        "opening_hours": ["07:00-09:00", "19:00-21:00"],
        "cameras": [],
        "bins": [
            {"rfid": f"{code}-{stream[:3].upper()}", "stream": stream, "capacity_l": 240}
            for stream in ("food", "recyclable", "hazardous", "other")
        ],
        "contact_name": "李明",
        "contact_phone": "13812345678",
        **changes,
    }


# The JT/T 808 listener on a port of the system's choosing, on loopback: tests run side by side.
LOOPBACK_LISTENER = {"jt808_host": "127.0.0.1", "jt808_port": 0}


@pytest.fixture(scope="session")
def waste_database(infrastructure: Infrastructure) -> str:
    return infrastructure.database("services.waste")


def waste_settings(infrastructure: Infrastructure, database: str, **overrides: Any) -> WasteSettings:
    values = infrastructure.service_settings(NATS_IDENTITY.user, database) | LOOPBACK_LISTENER
    return WasteSettings(**(values | overrides))


@pytest.fixture
async def waste_factory(infrastructure: Infrastructure, waste_database: str):
    return await service_factory(
        infrastructure,
        waste_database,
        lambda **overrides: create_app(waste_settings(infrastructure, waste_database, **overrides)),
        Waste,
    )


@pytest.fixture
async def waste(waste_factory) -> AsyncIterator[Waste]:
    async with waste_factory() as running:
        yield running
