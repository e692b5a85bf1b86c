"""The demo data ``make run`` loads for the vision service, through the gateway."""

from __future__ import annotations

from services.vision.demo import DEMO_BURSTS, seed


async def test_the_demo_fills_the_review_queue_once_and_dispatches_a_precise_class(vision_stack):
    headers = vision_stack.as_("vision-admin")
    assert await seed(vision_stack.client, headers) == len(DEMO_BURSTS)
    assert await seed(vision_stack.client, headers) == 0
    alarms = (await vision_stack.client.get("/api/vision/v1/alarms", headers=headers)).json()["items"]
    assert sorted((a["algorithm_code"], a["status"]) for a in alarms) == [
        ("exposed_garbage", "pending_review"),
        ("floating_waste", "pending_review"),
        ("road_occupying_stall", "pending_review"),
        ("truck_not_covered", "auto_confirmed"),
    ]
    online = await vision_stack.client.get(
        "/api/vision/v1/cameras", params={"status": "online"}, headers=headers
    )
    assert len(online.json()["items"]) == 5
