"""Muck to case, through the gateway on real PostgreSQL and NATS: a truck breaking a transport rule
becomes one enforcement case, whose evidence is the truck's track, fetched from the muck service
under the hash the case holds; the same reports sent again raise nothing more."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from citygrid.testing import Infrastructure, truncate_all, wait_until
from services.muck.events import NATS_IDENTITY as MUCK_NATS
from services.muck.main import MuckSettings
from services.muck.main import create_app as create_muck_app
from tests.conftest import (
    CLERK_ROLES,
    CLERK_UNIT,
    ServiceStack,
    SuiteConsumer,
    service_with_cases,
)

MUCK = "/api/muck/v1"
CASES = "/api/case/v1/cases"
PLATE = "粤A00001D"
CONSUMERS: dict[str, SuiteConsumer] = {
    "platform": SuiteConsumer(["muck:ingest"], []),
    "registrar": SuiteConsumer(["muck:read", "muck:write"], []),
    "clerk": SuiteConsumer(["cases:read", "cases:write"], CLERK_ROLES, unit=CLERK_UNIT),
}


Stack = ServiceStack


@pytest.fixture
async def muck_case_stack(
    infrastructure: Infrastructure, databases: dict[str, str], muck_database: str, clean: None
) -> AsyncIterator[Stack]:
    await truncate_all(muck_database)
    muck_app = create_muck_app(
        MuckSettings(
            **infrastructure.service_settings(MUCK_NATS.user, muck_database),
            jt808_host="127.0.0.1",
            jt808_port=0,
            rules_round_seconds=0.1,
        )
    )
    async with service_with_cases(infrastructure, databases, "muck", muck_app, CONSUMERS) as running:
        yield running


def speeding(count: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    return [
        {
            "plate": PLATE,
            "at": (start + timedelta(seconds=10 * i)).isoformat(),
            "location": {"type": "Point", "coordinates": [113.36 + 0.0002 * i, 23.13]},
            "speed_kmh": 88.0,
            "direction": 90,
            "load": "empty",
        }
        for i in range(count)
    ]


async def cases(stack: Stack) -> list[dict[str, Any]]:
    listed = await stack.client.get(CASES, headers=stack.as_("clerk"))
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_a_speeding_truck_becomes_one_case_with_its_track_as_evidence(muck_case_stack: Stack) -> None:
    stack = muck_case_stack
    company = {
        "code": "GZJY",
        "name": "Jianyun Transport",
        "licence_number": "ZT-1",
        "district_code": "440106",
    }
    truck = {
        "plate": PLATE,
        "company_code": "GZJY",
        "terminal_phone": "013800000001",
        "approval_number": "ZT-0001",
        "approval_valid_until": (date.today() + timedelta(days=365)).isoformat(),
        "capacity_m3": 18.0,
    }
    for path, body in (
        ("companies/import", {"companies": [company]}),
        ("trucks/import", {"trucks": [truck]}),
    ):
        response = await stack.client.post(f"{MUCK}/{path}", json=body, headers=stack.as_("registrar"))
        assert response.status_code == 200, response.text
    for _ in range(2):  # the second time: a platform resending what it was not sure arrived
        sent = await stack.client.post(
            f"{MUCK}/positions", json={"positions": speeding(15)}, headers=stack.as_("platform")
        )
        assert sent.status_code == 200, sent.text

    async def raised() -> bool:
        return bool(await cases(stack))

    await wait_until(raised, timeout=20)
    (case,) = await cases(stack)
    assert case["category_code"] == "20312"
    assert case["district_code"] == "440106"
    assert case["origin"]["service"] == "muck"
    violation = await stack.client.get(
        f"{MUCK}/violations/{case['origin']['reference']}", headers=stack.as_("registrar")
    )
    assert violation.status_code == 200, violation.text
    assert (violation.json()["plate"], violation.json()["kind"]) == (PLATE, "overspeed")

    detail = await stack.client.get(f"{CASES}/{case['id']}", headers=stack.as_("clerk"))
    (evidence,) = detail.json()["evidence"]
    assert (evidence["service"], evidence["content_type"]) == ("muck", "application/geo+json")
    track = await stack.client.get(evidence["url"], headers=stack.as_("registrar"))
    assert track.status_code == 200, track.text
    assert hashlib.sha256(track.content).hexdigest() == evidence["sha256"]
    assert track.json()["properties"]["plate"] == PLATE
    # Nothing more comes of the resent reports.
    assert len(await cases(stack)) == 1


async def test_a_truck_off_its_route_becomes_one_case_and_its_manifest_goes_from_issue_to_close(
    muck_case_stack: Stack,
) -> None:
    stack = muck_case_stack
    registrar = stack.as_("registrar")
    lat = 23.13

    def ring(lon: float) -> list[list[float]]:
        return [
            [lon - 0.001, lat - 0.001],
            [lon + 0.001, lat - 0.001],
            [lon + 0.001, lat + 0.001],
            [lon - 0.001, lat + 0.001],
        ]

    def site(code: str, kind: str, lon: float) -> dict[str, Any]:
        return {
            "code": code,
            "kind": kind,
            "name": code,
            "district_code": "440106",
            "boundary": ring(lon),
            "permit_number": "PZ-1",
            "permit_valid_from": "2026-01-01",
            "permit_valid_until": "2030-12-31",
            "approved_quantity_m3": 50_000.0,
        }

    company = {
        "code": "GZJY",
        "name": "Jianyun Transport",
        "licence_number": "ZT-1",
        "district_code": "440106",
    }
    truck = {
        "plate": PLATE,
        "company_code": "GZJY",
        "terminal_phone": "013800000001",
        "approval_number": "ZT-0001",
        "approval_valid_until": (date.today() + timedelta(days=365)).isoformat(),
        "capacity_m3": 18.0,
    }
    route = {"code": "R1", "name": "Huangpu Avenue", "line": [[113.36, lat], [113.46, lat]], "width_m": 40.0}
    for path, body in (
        ("companies/import", {"companies": [company]}),
        ("trucks/import", {"trucks": [truck]}),
        (
            "sites/import",
            {"sites": [site("TH-CS-1", "construction", 113.36), site("BY-DS-1", "disposal", 113.46)]},
        ),
        ("routes/import", {"routes": [route]}),
    ):
        response = await stack.client.post(f"{MUCK}/{path}", json=body, headers=registrar)
        assert response.status_code == 200, response.text
    now = datetime.now(UTC).replace(microsecond=0)
    issued = await stack.client.post(
        f"{MUCK}/manifests",
        json={
            "plate": PLATE,
            "origin_site": "TH-CS-1",
            "disposal_site": "BY-DS-1",
            "route_code": "R1",
            "waste_type": "spoil",
            "declared_quantity_m3": 15.0,
            "window_start": (now - timedelta(hours=1)).isoformat(),
            "window_end": (now + timedelta(hours=2)).isoformat(),
        },
        headers=registrar,
    )
    assert issued.status_code == 201, issued.text
    manifest = issued.json()

    # In the site, then 400 m north of the route for 12 minutes, then back on it and into the disposal site.
    start = now - timedelta(minutes=20)

    def report(seconds: int, lon: float, north_m: float, load: str = "full") -> dict[str, Any]:
        return {
            "plate": PLATE,
            "at": (start + timedelta(seconds=seconds)).isoformat(),
            "location": {"type": "Point", "coordinates": [lon, lat + north_m / 110_770]},
            "speed_kmh": 30.0,
            "direction": 90,
            "load": load,
        }

    reports = [report(0, 113.36, 0, "empty"), report(30, 113.36, 0)]
    reports += [report(60 + 30 * i, 113.37 + 0.001 * i, 400) for i in range(25)]
    reports += [report(900, 113.45, 0), report(930, 113.46, 0)]
    sent = await stack.client.post(
        f"{MUCK}/positions", json={"positions": reports}, headers=stack.as_("platform")
    )
    assert sent.status_code == 200, sent.text

    async def raised() -> bool:
        return bool(await cases(stack))

    await wait_until(raised, timeout=20)

    async def delivered() -> bool:
        shown = await stack.client.get(f"{MUCK}/manifests/{manifest['id']}", headers=registrar)
        return bool(shown.json()["status"] == "delivered")

    await wait_until(delivered, timeout=20)
    (case,) = await cases(stack)  # severe after 15 minutes would be the same violation: 12 is not
    assert case["category_code"] == "20312"
    violation = (
        await stack.client.get(f"{MUCK}/violations/{case['origin']['reference']}", headers=registrar)
    ).json()
    assert (violation["kind"], violation["manifest_number"]) == ("off_route", manifest["number"])
    detail = await stack.client.get(f"{CASES}/{case['id']}", headers=stack.as_("clerk"))
    (evidence,) = detail.json()["evidence"]
    track = await stack.client.get(evidence["url"], headers=registrar)
    assert hashlib.sha256(track.content).hexdigest() == evidence["sha256"]
    assert len(track.json()["geometry"]["coordinates"]) >= 2

    confirmed = await stack.client.post(
        f"{MUCK}/manifests/{manifest['id']}/confirm", json={"received_quantity_m3": 15.2}, headers=registrar
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "closed"
