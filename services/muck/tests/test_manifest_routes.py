"""Manifests over HTTP on real PostgreSQL and NATS: issued with every refusal named, one load at a
time per truck, moved by a gate scan and the geofences, confirmed by the receiver, closure rates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from citygrid.testing import wait_until
from services.muck.manifests import service as manifests
from services.muck.tests.conftest import PLATFORM, READER, Muck
from services.muck.tests.test_rules import FAST, PLATE, fetch, register_sites, trip


def manifest(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "plate": PLATE,
        "origin_site": "TH-CS-1",
        "disposal_site": "BY-DS-1",
        "waste_type": "spoil",
        "declared_quantity_m3": 15.0,
        "window_start": (now - timedelta(hours=1)).isoformat(),
        "window_end": (now + timedelta(hours=3)).isoformat(),
        **changes,
    }


async def test_a_manifest_from_issue_to_close(muck_factory) -> None:
    async with muck_factory(**FAST) as muck:
        await muck.register_fleet(1)
        await register_sites(muck)
        issued = await muck.post("/v1/manifests", manifest())
        assert issued.status_code == 201, issued.text
        body = issued.json()
        assert (body["status"], body["district_code"], body["company_code"]) == ("issued", "440106", "GZJY")
        assert body["number"].startswith("LD")

        # The truck leaves the site and enters the disposal site: the geofences load and deliver it.
        assert (await muck.post("/v1/positions", {"positions": trip()}, scopes=PLATFORM)).status_code == 200

        async def delivered() -> bool:
            shown = await muck.get(f"/v1/manifests/{body['id']}", scopes=READER)
            return bool(shown.json()["status"] == "delivered")

        await wait_until(delivered, timeout=20)
        confirmed = await muck.post(f"/v1/manifests/{body['id']}/confirm", {"received_quantity_m3": 14.5})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "closed"
        shown = (await muck.get(f"/v1/manifests/{body['id']}", scopes=READER)).json()
        assert [step["action"] for step in shown["steps"]] == [
            "issue",
            "load",
            "depart",
            "deliver",
            "confirm",
        ]
        subjects = [
            row["subject"]
            for row in await fetch(
                muck, "SELECT subject FROM outbox WHERE subject LIKE 'muck.manifest.%' ORDER BY seq"
            )
        ]
        assert subjects == [
            "muck.manifest.issued",
            "muck.manifest.loaded",
            "muck.manifest.delivered",
            "muck.manifest.closed",
        ]
        again = await muck.post(f"/v1/manifests/{body['id']}/confirm", {"received_quantity_m3": 14.5})
        assert again.status_code == 409
        assert again.json()["code"] == "muck.invalid_manifest_transition"

        since = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
        until = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        rates = await muck.get(f"/v1/manifests/closure?by=site&since={since}&until={until}", scopes=READER)
        assert rates.status_code == 200, rates.text
        assert rates.json() == [{"key": "TH-CS-1", "due": 1, "closed": 1, "rate": 1.0}]


async def test_each_refusal_is_a_422_with_its_code_and_nothing_is_written(muck: Muck) -> None:
    await muck.register_fleet(1)
    await register_sites(muck)
    refusals = {
        "muck.unknown_truck": manifest(plate="粤A99999D"),
        "muck.unknown_site": manifest(origin_site="NOWHERE"),
        "muck.not_a_construction_site": manifest(origin_site="BY-DS-1"),
        "muck.not_a_disposal_site": manifest(disposal_site="TH-CS-1"),
        "muck.over_capacity": manifest(declared_quantity_m3=30.0),
        "muck.unknown_route": manifest(route_code="R-NONE"),
        "muck.unknown_driver": manifest(driver_id="01890000-0000-7000-8000-000000000000"),
    }
    for code, body in refusals.items():
        response = await muck.post("/v1/manifests", body)
        assert response.status_code == 422, (code, response.text)
        assert response.json()["code"] == code
    window = manifest(window_end=manifest()["window_start"])
    assert (await muck.post("/v1/manifests", window)).status_code == 422
    assert await fetch(muck, "SELECT id FROM manifests") == []


async def test_a_truck_carries_one_load_at_a_time_even_when_two_issue_at_once(muck: Muck) -> None:
    await muck.register_fleet(1)
    await register_sites(muck)
    answers = await asyncio.gather(*(muck.post("/v1/manifests", manifest()) for _ in range(4)))
    assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409]
    assert {answer.json()["code"] for answer in answers if answer.status_code == 409} == {
        "muck.truck_has_open_manifest"
    }
    (created,) = [answer.json() for answer in answers if answer.status_code == 201]
    cancelled = await muck.post(f"/v1/manifests/{created['id']}/cancel", {})
    assert cancelled.json()["status"] == "cancelled"
    assert (await muck.post("/v1/manifests", manifest())).status_code == 201


async def test_a_quantity_that_differs_is_abnormal_until_a_regulator_resolves_it(muck: Muck) -> None:
    await muck.register_fleet(1)
    await register_sites(muck)
    created = (await muck.post("/v1/manifests", manifest())).json()
    loaded = await muck.post(f"/v1/manifests/{created['id']}/load", {})
    assert loaded.json()["status"] == "loaded"
    # Not delivered yet: a receiver cannot confirm.
    early = await muck.post(f"/v1/manifests/{created['id']}/confirm", {"received_quantity_m3": 15.0})
    assert early.status_code == 409
    connection_rows = await fetch(
        muck, "UPDATE manifests SET status = 'delivered' WHERE id = $1 RETURNING id", created["id"]
    )
    assert connection_rows
    short = await muck.post(f"/v1/manifests/{created['id']}/confirm", {"received_quantity_m3": 9.0})
    assert (short.json()["status"], short.json()["abnormal_reason"]) == ("abnormal", "quantity_mismatch")
    resolved = await muck.post(f"/v1/manifests/{created['id']}/resolve", {"note": "weighbridge error"})
    assert resolved.json()["status"] == "closed"
    assert resolved.json()["resolution_note"] == "weighbridge error"


async def test_a_district_sees_and_issues_its_own_manifests_only(muck: Muck) -> None:
    await muck.register_fleet(1)
    await register_sites(muck)
    created = (await muck.post("/v1/manifests", manifest())).json()
    other = await muck.get(f"/v1/manifests/{created['id']}", scopes=READER, district="440104")
    assert other.status_code == 403
    listed = await muck.get("/v1/manifests", scopes=READER, district="440104")
    assert listed.json()["items"] == []
    own = await muck.get("/v1/manifests", scopes=READER, district="440106")
    assert [item["id"] for item in own.json()["items"]] == [created["id"]]


async def test_a_gate_scan_at_an_impossible_time_is_refused_and_moves_nothing(muck: Muck) -> None:
    await muck.register_fleet(1)
    await register_sites(muck)
    issued = (await muck.post("/v1/manifests", manifest())).json()
    now = datetime.now(UTC)
    for at in (now + timedelta(hours=1), now - timedelta(days=1)):
        scanned = await muck.post(f"/v1/manifests/{issued['id']}/load", {"at": at.isoformat()})
        assert scanned.status_code == 422, scanned.text
        assert scanned.json()["code"] == "muck.step_time_invalid"
    shown = (await muck.get(f"/v1/manifests/{issued['id']}", scopes=READER)).json()
    assert (shown["status"], [step["action"] for step in shown["steps"]]) == ("issued", ["issue"])

    at = datetime.fromisoformat(issued["issued_at"]) + timedelta(milliseconds=10)
    loaded = await muck.post(f"/v1/manifests/{issued['id']}/load", {"at": at.isoformat()})
    assert loaded.status_code == 200, loaded.text
    assert datetime.fromisoformat(loaded.json()["loaded_at"]) == at


async def test_filters_and_periods_the_routes_cannot_serve_are_422s(muck: Muck) -> None:
    for path, code in (
        ("/v1/manifests?status=lost", "validation_failed"),
        ("/v1/manifests?district=999999", "validation_failed"),
        ("/v1/manifests/closure?since=2026-01-01T00:00:00&until=2026-02-01T00:00:00", "validation_failed"),
        (
            "/v1/manifests/closure?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "muck.invalid_period",
        ),
        (
            "/v1/manifests/closure?since=2024-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "muck.invalid_period",
        ),
    ):
        answered = await muck.get(path, scopes=READER)
        assert answered.status_code == 422, (path, answered.text)
        assert answered.json()["code"] == code, (path, answered.text)


async def test_the_gauge_counts_unfinished_manifests_by_state(muck: Muck) -> None:
    await muck.register_fleet(2)
    await register_sites(muck)
    first = (await muck.post("/v1/manifests", manifest())).json()
    assert (await muck.post("/v1/manifests", manifest(plate="粤A00002D"))).status_code == 201
    assert (await muck.post(f"/v1/manifests/{first['id']}/cancel", None)).status_code == 200
    listed = await muck.get("/v1/manifests?status=issued", scopes=READER)
    assert [item["plate"] for item in listed.json()["items"]] == ["粤A00002D"]

    await manifests.show_unfinished(muck.runtime, muck.app.state.muck_metrics)

    registry = muck.runtime.metrics.registry
    shown = {
        status: registry.get_sample_value("citygrid_muck_manifests", {"status": status})
        for status in ("issued", "loaded", "in_transit", "delivered", "confirmed", "abnormal")
    }
    assert shown == {"issued": 1, "loaded": 0, "in_transit": 0, "delivered": 0, "confirmed": 0, "abnormal": 0}
    assert registry.get_sample_value("citygrid_muck_manifests", {"status": "cancelled"}) is None


async def test_manifests_page_newest_first_by_cursor(muck: Muck) -> None:
    await muck.register_fleet(3)
    await register_sites(muck)
    plates = [f"粤A{number:05d}D" for number in (1, 2, 3)]
    for plate in plates:
        assert (await muck.post("/v1/manifests", manifest(plate=plate))).status_code == 201

    first = (await muck.get("/v1/manifests?limit=2", scopes=READER)).json()
    second = (await muck.get(f"/v1/manifests?limit=2&cursor={first['next_cursor']}", scopes=READER)).json()

    assert [item["plate"] for item in first["items"] + second["items"]] == plates[::-1]
    assert second["next_cursor"] is None
    forged = await muck.get("/v1/manifests?cursor=WyJub3QgYSB0aW1lIiwiMSJd", scopes=READER)
    assert (forged.status_code, forged.json()["code"]) == (400, "pagination.invalid_cursor")
    violations = await muck.get("/v1/violations?cursor=WyJub3QgYSB0aW1lIiwiMSJd", scopes=READER)
    assert (violations.status_code, violations.json()["code"]) == (400, "pagination.invalid_cursor")
