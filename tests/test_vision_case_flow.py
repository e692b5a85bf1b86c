"""Video to case and back, through the gateway: a burst of duplicates → one alarm → one-click confirm
→ the case → handled → the engine looks again → closed (or sent back for rework).

The case service's intake of vision events lands separately; the steps that need it are marked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from citygrid.testing import stream_events, wait_until
from contract.vision import AlarmConfirmed, RecheckCompleted
from tests.test_case_flow import add_photo

CAMERA = "44010600081320000001"
VISION = "/api/vision/v1"
CASES = "/api/case/v1/cases"


async def burst_to_one_alarm(stack) -> dict:
    cameras = {
        "cameras": [
            {
                "camera_id": CAMERA,
                "name": "Tianhe Road bus stop",
                "owner": "city_management",
                "location": {"type": "Point", "coordinates": [113.3245, 23.1291]},
                "engine": "simulator",
            }
        ]
    }
    imported = await stack.client.post(
        f"{VISION}/cameras/import", json=cameras, headers=stack.as_("vision-admin")
    )
    assert imported.json() == {"imported": 1, "refused": []}, imported.text
    start = datetime.now(UTC) - timedelta(minutes=5)
    burst = {
        "detections": [
            {
                "camera_id": CAMERA,
                "algorithm_code": "exposed_garbage",
                "detected_at": (start + timedelta(seconds=s)).isoformat(),
                "confidence": 0.88,
                "boxes": [{"x": 0.4, "y": 0.4, "width": 0.2, "height": 0.2}],
            }
            for s in range(0, 200, 2)
        ]
    }
    refused = await stack.client.post(f"{VISION}/detections", json=burst, headers=stack.as_("reviewer"))
    assert refused.status_code == 403
    assert refused.json()["code"] == "auth.missing_scope"
    response = await stack.client.post(f"{VISION}/detections", json=burst, headers=stack.as_("engine"))
    assert response.status_code == 200, response.text
    again = await stack.client.post(f"{VISION}/detections", json=burst, headers=stack.as_("engine"))
    outcomes = [r["outcome"] for r in response.json()["results"] + again.json()["results"]]
    assert outcomes.count("raised") == 1
    queue = await stack.client.get(
        f"{VISION}/alarms",
        params={"status": "pending_review", "district": "440106"},
        headers=stack.as_("viewer"),
    )
    (alarm,) = queue.json()["items"]
    assert alarm["detections"] == 200
    return alarm


async def confirm(stack, alarm: dict) -> AlarmConfirmed:
    response = await stack.client.post(
        f"{VISION}/alarms/{alarm['id']}/confirm", headers=stack.as_("reviewer", **{"If-Match": '"1"'})
    )
    assert response.status_code == 200, response.text
    events = await stream_events(stack.infrastructure.nats_url, "VISION", at_least=1)
    return AlarmConfirmed.from_envelope(events[0])


async def the_case(stack) -> dict:
    async def exists() -> bool:
        listed = await stack.client.get(CASES, headers=stack.as_("clerk"))
        return bool(listed.json()["items"])

    await wait_until(exists, timeout=10)
    listed = await stack.client.get(CASES, headers=stack.as_("clerk"))
    case: dict = listed.json()["items"][0]
    return case


async def step(stack, case_id: str, action: str, body: dict | None = None) -> httpx.Response:
    current = await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("clerk"))
    return await stack.client.post(
        f"{CASES}/{case_id}/{action}",
        json=body,
        headers=stack.as_("clerk", **{"If-Match": current.headers["etag"]}),
    )


NEXT_STEP = {
    "reported": ("register", None),
    "registered": ("dispatch", {"unit": "tianhe-sanitation"}),
    "dispatched": ("accept", None),
    "accepted": ("handle", None),
}


async def handle(stack, case: dict) -> None:
    """Take the case from wherever the case service put it to handled, one step at a time."""
    status = await case_status(stack, case["id"])
    while status != "handled":
        action, body = NEXT_STEP[status]
        if action == "handle":  # the unit's phone sends the after-photo first
            assert (await add_photo(stack, case["id"])).status_code == 201
        response = await step(stack, case["id"], action, body)
        assert response.status_code == 200, response.text
        status = response.json()["status"]


async def case_status(stack, case_id: str) -> str:
    status: str = (await stack.client.get(f"{CASES}/{case_id}", headers=stack.as_("clerk"))).json()["status"]
    return status


async def test_a_burst_of_duplicates_becomes_one_alarm_that_one_click_confirms_for_the_case_service(
    vision_stack,
):
    alarm = await burst_to_one_alarm(vision_stack)
    event = await confirm(vision_stack, alarm)
    assert event.reference == alarm["id"]
    assert event.category_code == "20101"
    assert event.camera_id == CAMERA
    assert event.location.coordinates == (113.3245, 23.1291)
    viewer = await vision_stack.client.get(
        f"{VISION}/alarms/{alarm['id']}", headers=vision_stack.as_("viewer")
    )
    assert viewer.json()["status"] == "confirmed"
    denied = await vision_stack.client.post(
        f"{VISION}/alarms/{alarm['id']}/confirm", headers=vision_stack.as_("viewer", **{"If-Match": '"2"'})
    )
    assert denied.status_code == 403


async def test_the_confirmed_alarm_becomes_a_case_that_closes_after_a_passing_recheck(vision_stack):
    alarm = await burst_to_one_alarm(vision_stack)
    await confirm(vision_stack, alarm)
    case = await the_case(vision_stack)
    assert case["category_code"] == "20101"
    await handle(vision_stack, case)
    events = await stream_events(vision_stack.infrastructure.nats_url, "VISION", at_least=2, timeout=10)
    recheck = RecheckCompleted.from_envelope(events[-1])
    assert recheck.passed

    async def closed() -> bool:
        return await case_status(vision_stack, case["id"]) == "closed"

    await wait_until(closed, timeout=10)

    async def resolved() -> bool:
        detail = await vision_stack.client.get(
            f"{VISION}/alarms/{alarm['id']}", headers=vision_stack.as_("viewer")
        )
        return bool(detail.json()["status"] == "resolved")

    await wait_until(resolved, timeout=10)


async def test_a_failing_recheck_sends_the_case_back_for_rework(vision_stack):
    alarm = await burst_to_one_alarm(vision_stack)
    async with httpx.AsyncClient(base_url=vision_stack.simulator_url) as simulator:
        present = await simulator.put(
            f"/v1/scene/{CAMERA}/exposed_garbage",
            json={"box": {"x": 0.41, "y": 0.4, "width": 0.2, "height": 0.2}},
        )
        assert present.status_code == 204
    await confirm(vision_stack, alarm)
    case = await the_case(vision_stack)
    await handle(vision_stack, case)
    events = await stream_events(vision_stack.infrastructure.nats_url, "VISION", at_least=2, timeout=10)
    recheck = RecheckCompleted.from_envelope(events[-1])
    assert not recheck.passed
    assert recheck.evidence

    async def reworked() -> bool:
        detail = await vision_stack.client.get(f"{CASES}/{case['id']}", headers=vision_stack.as_("clerk"))
        return "rework" in [entry["action"] for entry in detail.json()["history"]]

    await wait_until(reworked, timeout=10)
    assert await case_status(vision_stack, case["id"]) not in ("handled", "closed")
