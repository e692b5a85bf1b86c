"""Demo data for ``make run``: two gas companies with their stations, cylinders along their lifecycle,
a household that holds one, and a fill check refused (an overdue cylinder) that opens a case."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx

API = "/api/gas/v1"
LICENCE_UNTIL = date(2029, 12, 31)
ENTERPRISES: list[dict[str, object]] = [
    {"code": "GZGAS", "kind": "gas_company", "name": "Guangzhou Gas Group", "licence_number": "GZ-RQ-0001"},
    {"code": "NANFANG", "kind": "gas_company", "name": "Nanfang LPG", "licence_number": "GZ-RQ-0002"},
    {
        "code": "GZGAS-ST-TH01",
        "kind": "filling_station",
        "name": "Tianhe filling station",
        "company_code": "GZGAS",
        "licence_number": "GZ-CZ-0101",
        "district_code": "440106",
        "location": {"type": "Point", "coordinates": [113.3612, 23.1349]},
    },
    {
        "code": "NANFANG-ST-BY01",
        "kind": "filling_station",
        "name": "Baiyun filling station",
        "company_code": "NANFANG",
        "licence_number": "GZ-CZ-0201",
        "district_code": "440111",
        "location": {"type": "Point", "coordinates": [113.2731, 23.1990]},
    },
    {
        "code": "GZGAS-SP-YX01",
        "kind": "supply_point",
        "name": "Yuexiu supply point",
        "company_code": "GZGAS",
        "licence_number": "GZ-GY-0301",
        "district_code": "440104",
        "location": {"type": "Point", "coordinates": [113.2806, 23.1251]},
    },
]


def _cylinder(code: str, owner: str, made: date, inspected: date | None = None) -> dict[str, object]:
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
    }


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Register the demo's enterprises, cylinders and household, and walk one cylinder from its fill
    to the household, unless the demo cylinders exist; returns the scans made."""
    existing = await client.get(f"{API}/cylinders/GZ0000000001", headers=headers)
    if existing.status_code == 200:
        return 0
    today = datetime.now(UTC).date()
    enterprises = [{**e, "licence_valid_until": LICENCE_UNTIL.isoformat()} for e in ENTERPRISES]
    (
        await client.post(f"{API}/enterprises/import", json={"enterprises": enterprises}, headers=headers)
    ).raise_for_status()
    cylinders = [
        _cylinder("GZ0000000001", "GZGAS", today - timedelta(days=700)),
        _cylinder("GZ0000000002", "GZGAS", today - timedelta(days=365 * 3), today - timedelta(days=200)),
        # Made five years ago, never inspected since: overdue, the scale refuses it.
        _cylinder("GZ0000000003", "GZGAS", today - timedelta(days=365 * 5)),
        _cylinder("NF0000000001", "NANFANG", today - timedelta(days=400)),
    ]
    (
        await client.post(f"{API}/cylinders/import", json={"cylinders": cylinders}, headers=headers)
    ).raise_for_status()
    household = await client.post(
        f"{API}/users",
        json={
            "kind": "household",
            "name": "陈小明",
            "phone": "13800138000",
            "address": "天河区体育西路 100 号 5 楼",
            "district_code": "440106",
            "supplier_code": "GZGAS-SP-YX01",
            "stove_sold_on": (today - timedelta(days=365 * 9)).isoformat(),
        },
        headers=headers,
    )
    household.raise_for_status()
    user_id = household.json()["id"]
    now = datetime.now(UTC)
    walk = [
        {
            "cylinder_code": "GZ0000000001",
            "kind": "fill",
            "at": (now - timedelta(hours=3)).isoformat(),
            "enterprise_code": "GZGAS-ST-TH01",
            "scale_id": "TH01-S1",
            "operator": "op-017",
            "net_mass_kg": 14.5,
            "fill_batch": f"TH01-{today:%Y%m%d}-1",
        },
        {
            "cylinder_code": "GZ0000000001",
            "kind": "dispatch",
            "at": (now - timedelta(hours=2)).isoformat(),
            "enterprise_code": "GZGAS-SP-YX01",
        },
        {
            "cylinder_code": "GZ0000000001",
            "kind": "deliver",
            "at": (now - timedelta(hours=1)).isoformat(),
            "user_id": user_id,
            "location": {"type": "Point", "coordinates": [113.3245, 23.1371]},
        },
    ]
    scans = await client.post(f"{API}/scans", json={"scans": walk}, headers=headers)
    scans.raise_for_status()
    check = await client.post(
        f"{API}/fill-checks",
        json={"cylinder_code": "GZ0000000003", "station_code": "GZGAS-ST-TH01", "scale_id": "TH01-S1"},
        headers=headers,
    )
    check.raise_for_status()
    return int(scans.json()["accepted"])
