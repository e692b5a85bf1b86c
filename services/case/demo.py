"""Demo cases for ``make run``: a few reports across Guangzhou, some moved along the workflow."""

from __future__ import annotations

import httpx

DEMO_REPORTS = [
    ("440106", 113.3245, 23.1291, "20106", "Overflowing bin at the Tianhe Road bus stop", "inspector"),
    ("440104", 113.2668, 23.1291, "10117", "Broken street lamp on Beijing Road", "public"),
    ("440105", 113.3173, 23.0838, "20101", "Exposed garbage beside Haizhu wetland gate", "video"),
    ("440103", 113.2442, 23.1259, "20501", "Road-occupying stall on Shangxiajiu", "inspector"),
    ("440111", 113.2732, 23.1622, "20201", "Illegal flyers on the Baiyun Avenue underpass", "hotline"),
    ("440113", 113.3845, 22.9373, "20303", "Muck spilled on Panyu Avenue", "video"),
]


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Report the demo cases unless cases exist already; returns how many were created."""
    existing = await client.get("/api/case/v1/cases", params={"limit": 1}, headers=headers)
    existing.raise_for_status()
    if existing.json()["items"]:
        return 0
    created = 0
    for index, (district, lon, lat, category, description, source) in enumerate(DEMO_REPORTS):
        response = await client.post(
            "/api/case/v1/cases",
            json={
                "category_code": category,
                "description": description,
                "location": {"type": "Point", "coordinates": [lon, lat]},
                "district_code": district,
                "source": source,
                "reporter": {"name": "Demo Reporter", "phone": "13800138000"},
            },
            headers={**headers, "Idempotency-Key": f"demo-{index}"},
        )
        response.raise_for_status()
        created += 1
        case = response.json()
        if index % 2 == 0:
            await client.post(
                f"/api/case/v1/cases/{case['id']}/register", headers={**headers, "If-Match": '"1"'}
            )
    return created
