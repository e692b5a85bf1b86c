"""Demo data for ``make run``: cameras across Guangzhou and bursts of detections from the simulator's
point of view, so the review queue has alarms and a precise class has dispatched itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx

from services.vision.simulator import fake_jpeg

API = "/api/vision/v1"
DEMO_CAMERAS = [
    ("44010600081320000001", "Tianhe Road bus stop", "city_management", 113.3245, 23.1291),
    ("44010400081320000002", "Beijing Road pedestrian street", "public_security", 113.2668, 23.1291),
    ("44010500081310000003", "Haizhu wetland gate", "city_management", 113.3173, 23.0838),
    ("44010300041320000004", "Shangxiajiu crossing", "transport", 113.2442, 23.1259),
    ("44011300081320000005", "Panyu Avenue site gate", "housing_construction", 113.3845, 22.9373),
]
# (camera index, class, seconds between the first and last detection of the burst)
DEMO_BURSTS = [
    (0, "exposed_garbage", 150),
    (1, "road_occupying_stall", 330),
    (2, "floating_waste", 330),
    (4, "truck_not_covered", 0),
]


def _snapshot(label: str) -> str:
    return base64.b64encode(fake_jpeg(label)).decode()


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Register the demo cameras and send the bursts unless alarms exist; returns the alarms raised."""
    existing = await client.get(f"{API}/alarms", params={"limit": 1}, headers=headers)
    existing.raise_for_status()
    if existing.json()["items"]:
        return 0
    cameras = [
        {
            "camera_id": camera_id,
            "name": name,
            "owner": owner,
            "location": {"type": "Point", "coordinates": [lon, lat]},
            "address": name,
            "engine": "simulator",
        }
        for camera_id, name, owner, lon, lat in DEMO_CAMERAS
    ]
    (
        await client.post(f"{API}/cameras/import", json={"cameras": cameras}, headers=headers)
    ).raise_for_status()
    (
        await client.post(
            f"{API}/cameras/heartbeats", json={"camera_ids": [c[0] for c in DEMO_CAMERAS]}, headers=headers
        )
    ).raise_for_status()
    start = datetime.now(UTC) - timedelta(minutes=10)
    detections = []
    for index, code, span in DEMO_BURSTS:
        camera_id = DEMO_CAMERAS[index][0]
        for step in range(0, span + 1, 30) if span else [0]:
            detections.append(
                {
                    "camera_id": camera_id,
                    "algorithm_code": code,
                    "detected_at": (start + timedelta(seconds=step)).isoformat(),
                    "confidence": 0.9,
                    "boxes": [{"x": 0.4, "y": 0.45, "width": 0.2, "height": 0.25}],
                    "snapshot_base64": _snapshot(f"{camera_id} {code} {step}"),
                }
            )
    response = await client.post(f"{API}/detections", json={"detections": detections}, headers=headers)
    response.raise_for_status()
    return sum(1 for r in response.json()["results"] if r["outcome"] == "raised")
