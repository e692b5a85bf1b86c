"""District binding in the vision service, through the gateway: a district centre's keys see, read and
review their own district's cameras and alarms only, and never the city-wide figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.vision.tests.conftest import TIANHE_CAMERA, YUEXIU_CAMERA, camera, detection, snapshot
from tests.test_bad_input import assert_problem

VISION = "/api/vision/v1"
TIANHE, YUEXIU = "440106", "440104"


async def register_cameras(stack) -> None:
    cameras = [
        camera(TIANHE_CAMERA),
        camera(
            YUEXIU_CAMERA,
            name="Beijing Road pedestrian street",
            address="Beijing Road pedestrian street",
            location={"type": "Point", "coordinates": [113.2668, 23.1291]},
        ),
    ]
    imported = await stack.client.post(
        f"{VISION}/cameras/import", json={"cameras": cameras}, headers=stack.as_("vision-admin")
    )
    assert imported.json() == {"imported": 2, "refused": []}, imported.text


async def raise_alarm(stack, camera_id: str, frame: str = "best") -> dict:
    """One pending-review alarm (exposed garbage persists 120 s: two detections two minutes apart)."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    response = await stack.client.post(
        f"{VISION}/detections",
        json={
            "detections": [
                detection(camera_id, at=start),
                detection(camera_id, at=start + timedelta(seconds=130), snapshot_base64=snapshot(frame)),
            ]
        },
        headers=stack.as_("engine"),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1]["outcome"] == "raised", results
    detail = await stack.client.get(
        f"{VISION}/alarms/{results[1]['alarm_ids'][0]}", headers=stack.as_("viewer")
    )
    alarm: dict = detail.json()
    assert (alarm["status"], alarm["district_code"]) == ("pending_review", camera_id[:6])
    return alarm


async def two_districts(stack) -> tuple[dict, dict]:
    """A camera and a pending-review alarm in Tianhe and in Yuexiu."""
    await register_cameras(stack)
    return await raise_alarm(stack, TIANHE_CAMERA), await raise_alarm(stack, YUEXIU_CAMERA, "yuexiu frame")


async def status_of(stack, alarm: dict) -> str:
    detail = await stack.client.get(f"{VISION}/alarms/{alarm['id']}", headers=stack.as_("viewer"))
    status: str = detail.json()["status"]
    return status


async def test_a_district_viewer_lists_and_reads_its_own_districts_alarms_only(vision_stack):
    tianhe, yuexiu = await two_districts(vision_stack)
    client, viewer = vision_stack.client, vision_stack.as_("tianhe-viewer")
    listed = await client.get(f"{VISION}/alarms", headers=viewer)
    assert listed.status_code == 200, listed.text
    assert [a["id"] for a in listed.json()["items"]] == [tianhe["id"]]
    other = await client.get(f"{VISION}/alarms", params={"district": YUEXIU}, headers=viewer)
    assert_problem(other, 403, "auth.other_district")
    city = await client.get(f"{VISION}/alarms", headers=vision_stack.as_("viewer"))
    assert {a["id"] for a in city.json()["items"]} == {tianhe["id"], yuexiu["id"]}
    assert_problem(
        await client.get(f"{VISION}/alarms/{yuexiu['id']}", headers=viewer), 403, "auth.other_district"
    )
    own = await client.get(f"{VISION}/alarms/{tianhe['id']}", headers=viewer)
    assert own.status_code == 200, own.text
    assert own.json()["id"] == tianhe["id"]


async def test_a_district_reviewer_cannot_confirm_another_districts_alarm_but_confirms_its_own(vision_stack):
    tianhe, yuexiu = await two_districts(vision_stack)
    reviewer = vision_stack.as_("tianhe-reviewer", **{"If-Match": '"1"'})
    refused = await vision_stack.client.post(f"{VISION}/alarms/{yuexiu['id']}/confirm", headers=reviewer)
    assert_problem(refused, 403, "auth.other_district")
    assert await status_of(vision_stack, yuexiu) == "pending_review"
    confirmed = await vision_stack.client.post(f"{VISION}/alarms/{tianhe['id']}/confirm", headers=reviewer)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed"
    assert await status_of(vision_stack, tianhe) == "confirmed"


async def test_a_district_reviewers_bulk_review_refuses_another_districts_alarm_alone(vision_stack):
    """The other district's item fails on its own; the reviewer's own district's item goes through."""
    tianhe, yuexiu = await two_districts(vision_stack)
    response = await vision_stack.client.post(
        f"{VISION}/alarms/review",
        json={"action": "confirm", "alarm_ids": [yuexiu["id"], tianhe["id"]]},
        headers=vision_stack.as_("tianhe-reviewer"),
    )
    assert response.status_code == 200, response.text
    refused, confirmed = response.json()["results"]
    assert (refused["alarm_id"], refused["ok"], refused["code"]) == (
        yuexiu["id"],
        False,
        "auth.other_district",
    )
    assert (confirmed["alarm_id"], confirmed["ok"], confirmed["status"]) == (tianhe["id"], True, "confirmed")
    assert await status_of(vision_stack, yuexiu) == "pending_review"
    assert await status_of(vision_stack, tianhe) == "confirmed"


async def test_a_district_viewer_lists_and_reads_its_own_districts_cameras_only(vision_stack):
    await register_cameras(vision_stack)
    client, viewer = vision_stack.client, vision_stack.as_("tianhe-viewer")
    listed = await client.get(f"{VISION}/cameras", headers=viewer)
    assert listed.status_code == 200, listed.text
    assert [(c["camera_id"], c["district_code"]) for c in listed.json()["items"]] == [(TIANHE_CAMERA, TIANHE)]
    city = await client.get(f"{VISION}/cameras", headers=vision_stack.as_("viewer"))
    assert {c["camera_id"] for c in city.json()["items"]} == {TIANHE_CAMERA, YUEXIU_CAMERA}
    assert_problem(
        await client.get(f"{VISION}/cameras/{YUEXIU_CAMERA}", headers=viewer), 403, "auth.other_district"
    )
    own = await client.get(f"{VISION}/cameras/{TIANHE_CAMERA}", headers=viewer)
    assert own.status_code == 200, own.text


async def test_the_false_positive_figures_are_the_whole_citys_and_refused_to_a_district_viewer(vision_stack):
    stats = f"{VISION}/stats/false-positives"
    refused = await vision_stack.client.get(stats, headers=vision_stack.as_("tianhe-viewer"))
    assert_problem(refused, 403, "auth.other_district")
    city = await vision_stack.client.get(stats, headers=vision_stack.as_("viewer"))
    assert city.status_code == 200, city.text


async def test_a_district_viewer_gets_its_own_districts_snapshots_only(vision_stack):
    """A snapshot is addressed by its hash; a district-bound client still gets only those of its
    district's alarms, whoever told it the hash."""
    tianhe, yuexiu = await two_districts(vision_stack)
    ours = await vision_stack.client.get(tianhe["snapshot_url"], headers=vision_stack.as_("tianhe-viewer"))
    assert ours.status_code == 200, ours.text
    assert ours.headers["content-type"] == "image/jpeg"
    theirs = await vision_stack.client.get(yuexiu["snapshot_url"], headers=vision_stack.as_("tianhe-viewer"))
    assert_problem(theirs, 403, "auth.other_district")
    city = await vision_stack.client.get(yuexiu["snapshot_url"], headers=vision_stack.as_("viewer"))
    assert city.status_code == 200, city.text
