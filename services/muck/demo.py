"""Demo data for ``make run``: a transport company with a fleet of twenty trucks whose terminals may
connect to the JT/T 808 listener (phones 013800000001 to …020), a construction site in Tianhe and a
disposal site in Huangpu joined by an approved route, the central city's 20:00–23:30 window, and the
fleet's last minutes of positions relayed over HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

API = "/api/muck/v1"
FLEET = 20
SITE_ORIGIN = (113.3600, 23.1300)  # Tianhe
SITE_DESTINATION = (113.4600, 23.1100)  # Huangpu


def _square(centre: tuple[float, float], half: float) -> list[list[float]]:
    lon, lat = centre
    return [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
    ]


def terminal_phone(number: int) -> str:
    return f"0138{number:08d}"


def plate(number: int) -> str:
    return f"粤A{number:05d}D"


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Register the demo's register and relay a few positions; returns how many records were made."""
    created = 0

    async def post(path: str, body: object) -> dict[str, Any]:
        response = await client.post(f"{API}{path}", json=body, headers=headers)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    await post(
        "/companies/import",
        {
            "companies": [
                {
                    "code": "GZJY",
                    "name": "Guangzhou Jianyun Transport",
                    "licence_number": "GZ-ZT-0001",
                    "district_code": "440106",
                }
            ]
        },
    )
    trucks = [
        {
            "plate": plate(number),
            "company_code": "GZJY",
            "terminal_phone": terminal_phone(number),
            "approval_number": f"GZ-ZT-{number:04d}",
            "approval_valid_until": (date.today() + timedelta(days=365)).isoformat(),
            "capacity_m3": 18.0,
        }
        for number in range(1, FLEET + 1)
    ]
    result = await post("/trucks/import", {"trucks": trucks})
    created += int(result["created"])
    today = date.today()
    sites = [
        {
            "code": "TH-CS-001",
            "kind": "construction",
            "name": "Tianhe metro works, Huangpu Avenue",
            "district_code": "440106",
            "boundary": _square(SITE_ORIGIN, 0.002),
            "permit_number": "GZ-PZ-2026-001",
            "permit_valid_from": (today - timedelta(days=90)).isoformat(),
            "permit_valid_until": (today + timedelta(days=270)).isoformat(),
            "approved_quantity_m3": 120_000.0,
            "gate_cameras": ["44010608131310000001"],
        },
        {
            "code": "HP-DS-001",
            "kind": "disposal",
            "name": "Huangpu construction-waste receiving site",
            "district_code": "440112",
            "boundary": _square(SITE_DESTINATION, 0.003),
            "permit_number": "GZ-XN-2026-001",
            "permit_valid_from": (today - timedelta(days=365)).isoformat(),
            "permit_valid_until": (today + timedelta(days=365)).isoformat(),
            "approved_quantity_m3": 2_000_000.0,
            "gate_cameras": ["44011208131310000001"],
        },
    ]
    created += int((await post("/sites/import", {"sites": sites}))["created"])
    route = {
        "code": "R-TH-HP-01",
        "name": "Tianhe works to the Huangpu receiving site by Huangpu Avenue",
        "line": [list(SITE_ORIGIN), [113.4100, 23.1250], list(SITE_DESTINATION)],
        "width_m": 30.0,
    }
    await post("/routes/import", {"routes": [route]})
    area = {
        "code": "GZ-CENTRAL",
        "name": "Central city",
        "boundary": [[113.20, 23.05], [113.50, 23.05], [113.50, 23.20], [113.20, 23.20]],
        "windows": ["20:00-23:30"],
    }
    await post("/areas/import", {"areas": [area]})
    now = datetime.now(UTC).replace(microsecond=0)
    positions = [
        {
            "plate": plate(number),
            "at": (now - timedelta(seconds=30 * step)).isoformat(),
            "location": {
                "type": "Point",
                "coordinates": [
                    round(SITE_ORIGIN[0] + 0.004 * number - 0.0005 * step, 6),
                    round(SITE_ORIGIN[1] - 0.0005 * number, 6),
                ],
            },
            "speed_kmh": 35.0,
            "direction": 90,
            "load": "full",
        }
        for number in range(1, FLEET + 1)
        for step in range(10)
    ]
    stored = await post("/positions", {"positions": positions})
    return created + int(stored["stored"])
