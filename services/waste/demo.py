"""Demo data for ``make run``: six Huangpu drop-off points in Xiagang with their four bins (one open
around the clock, one watched by a camera), a collection point, collection vehicles for food and
other waste and a street sweeper, their depot, three end facilities, the evening food round and the
night round of other waste, and two of today's AI-box events: a mixed deposit (a violation, and a
case) and a plain deposit in the opening hours (nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

API = "/api/waste/v1"
HUANGPU = "440112"
STREAMS = ("food", "recyclable", "hazardous", "other")
# A camera of the vision demo's kind (GB/T 28181, Huangpu, city management) watching HP-XG-0001.
CAMERA = "44011200081310000101"


def point_code(number: int) -> str:
    return f"HP-XG-{number:04d}"


def _point(number: int) -> dict[str, Any]:
    code = point_code(number)
    return {
        "code": code,
        "name": f"Xiagang drop-off point {number}",
        "community": "Xiagang",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [round(113.4700 + 0.0015 * number, 6), 23.1000]},
        "address": f"Xiagang Avenue {100 + number}",
        # Point 6 is a staffed station open around the clock.
        "opening_hours": [] if number == 6 else ["07:00-09:00", "19:00-21:00"],
        "cameras": [CAMERA] if number == 1 else [],
        "bins": [
            {"rfid": f"{code}-{stream[:3].upper()}", "stream": stream, "capacity_l": 240}
            for stream in STREAMS
        ],
        "contact_name": "陈晓华",
        "contact_phone": f"1380000{number:04d}",
    }


VEHICLES = [
    ("粤A01F01", "collection", "food"),
    ("粤A01F02", "collection", "food"),
    ("粤A01Q01", "collection", "other"),
    ("粤A01S01", "cleaning", None),
]
FACILITIES = [
    ("HP-FW-01", "Huangpu food-waste treatment plant", "food_waste_treatment", ["food"], [113.52, 23.16]),
    ("HP-INC-01", "Huangpu incineration plant", "incineration", ["other"], [113.55, 23.18]),
    ("HP-TS-01", "Xiagang transfer station", "transfer_station", ["other", "recyclable"], [113.48, 23.11]),
]


async def seed(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """Register the demo's register and send two AI-box events; returns how many records were made."""
    created = 0

    async def post(path: str, body: object) -> dict[str, Any]:
        response = await client.post(f"{API}{path}", json=body, headers=headers)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    points = [_point(number) for number in range(1, 7)]
    created += int((await post("/points/import", {"points": points}))["created"])
    collection = {
        "code": "HP-CP-01",
        "name": "Xiagang collection point",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [113.4820, 23.1040]},
        "streams": list(STREAMS),
    }
    created += int((await post("/collection-points/import", {"collection_points": [collection]}))["created"])
    vehicles = [
        {
            "plate": plate,
            "kind": kind,
            "stream": stream,
            "company": "Huangpu Environmental Sanitation",
            "district_code": HUANGPU,
            "terminal_phone": f"01390000{number:04d}",
            "driver_name": "刘建国",
            "driver_phone": f"1390000{number:04d}",
        }
        for number, (plate, kind, stream) in enumerate(VEHICLES, start=1)
    ]
    created += int((await post("/vehicles/import", {"vehicles": vehicles}))["created"])
    facilities = [
        {
            "code": code,
            "name": name,
            "kind": kind,
            "district_code": HUANGPU,
            "location": {"type": "Point", "coordinates": location},
            "streams": streams,
            "weighbridges": [f"{code}-WB1"],
        }
        for code, name, kind, streams, location in FACILITIES
    ]
    created += int((await post("/facilities/import", {"facilities": facilities}))["created"])
    depot = {
        "code": "HP-DEPOT-01",
        "name": "Xiagang sanitation depot",
        "district_code": HUANGPU,
        "location": {"type": "Point", "coordinates": [113.4650, 23.0980]},
        "radius_m": 120,
    }
    created += int((await post("/depots/import", {"depots": [depot]}))["created"])
    stops = [point_code(number) for number in range(1, 7)]
    routes = [
        {
            "code": "HP-R-FOOD-01",
            "name": "Xiagang evening food round",
            "plate": "粤A01F01",
            "district_code": HUANGPU,
            "stream": "food",
            "days": [1, 2, 3, 4, 5, 6, 7],
            "time_window": "21:00-23:30",
            "stops": stops,
            "facility_code": "HP-FW-01",
        },
        {
            "code": "HP-R-OTHER-01",
            "name": "Xiagang night round of other waste",
            "plate": "粤A01Q01",
            "district_code": HUANGPU,
            "stream": "other",
            "days": [1, 3, 5],
            "time_window": "23:00-02:00",
            "stops": [*stops, "HP-CP-01"],
            "facility_code": "HP-INC-01",
        },
    ]
    created += int((await post("/routes/import", {"routes": routes}))["created"])
    # Today's events under today's ids: a second `make run` the same day sends duplicates, answered as such.
    now = datetime.now(UTC).replace(microsecond=0)
    day = now.strftime("%Y%m%d")
    events = [
        {
            "id": f"demo-{day}-mixed",
            "point_code": point_code(2),
            "observed": "mixed_deposit",
            "at": (now - timedelta(minutes=5)).isoformat(),
            "confidence": 0.91,
            "bin_rfid": f"{point_code(2)}-FOO",
        },
        {
            "id": f"demo-{day}-deposit",
            "point_code": point_code(6),
            "observed": "deposit",
            "at": (now - timedelta(minutes=3)).isoformat(),
            "confidence": 0.95,
        },
    ]
    result = await post("/bin-events", {"events": events})
    return created + int(result["violations"])
