"""Likely duplicates: flagged on report, merged by an operator, merged automatically from video."""

from __future__ import annotations

from citygrid.testing import stream_events
from services.case import service
from services.case.schemas import ReportCase
from services.case.units import SYSTEM
from tests.test_case_flow import REPORT, report, step

API = "/api/case/v1"
LON, LAT = REPORT["location"]["coordinates"]
METRES_NORTH = 1 / 111_195  # degrees of latitude per metre


def north(metres: float, **changes) -> dict:
    location = {"type": "Point", "coordinates": [LON, LAT + metres * METRES_NORTH]}
    return {**REPORT, "location": location, **changes}


async def test_a_report_of_the_same_small_class_within_50_m_of_an_open_case_is_flagged(stack):
    original = (await report(stack)).json()
    assert original["likely_duplicate_of"] is None
    near = (await report(stack, body=north(40))).json()
    assert near["likely_duplicate_of"] == original["id"]
    assert near["status"] == "reported"  # only flagged: an operator decides
    far = (await report(stack, body=north(-60))).json()  # south: 60 m and 100 m from the two
    assert far["likely_duplicate_of"] is None
    other_class = (await report(stack, body=north(10, category_code="20101"))).json()
    assert other_class["likely_duplicate_of"] is None
    listed = (await stack.client.get(f"{API}/cases/{near['id']}", headers=stack.as_("reader"))).json()
    assert listed["likely_duplicate_of"] == original["id"]


async def test_a_registered_original_is_preferred_and_a_closed_one_is_not_flagged(stack):
    first = (await report(stack)).json()
    second = (await report(stack, body=north(30))).json()
    await step(stack, second["id"], "register", 1)
    third = (await report(stack, body=north(20))).json()
    assert third["likely_duplicate_of"] == second["id"]  # registered beats the nearer reported one
    await step(stack, first["id"], "reject", 1, {"note": "not a city matter"})
    await step(stack, second["id"], "cancel", 2, {"note": "withdrawn"}, consumer="admin")
    await step(stack, third["id"], "reject", 1, {"note": "gone"})
    assert (await report(stack)).json()["likely_duplicate_of"] is None


async def test_merging_tells_the_reporter_the_originals_number(stack):
    original = (await report(stack)).json()
    await step(stack, original["id"], "register", 1)
    duplicate = (await report(stack, body=north(10))).json()
    assert duplicate["likely_duplicate_of"] == original["id"]
    merged = await step(stack, duplicate["id"], "merge", 1, {"into": duplicate["likely_duplicate_of"]})
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["status"], body["merged_into"], body["merged_into_number"]) == (
        "merged",
        original["id"],
        original["number"],
    )
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=4)
    merged_event = events[-1]
    assert merged_event.type == "case.case.merged.v1"
    assert merged_event.data is not None
    assert (merged_event.data["merged_into"], merged_event.data["merged_into_number"]) == (
        original["id"],
        original["number"],
    )


async def test_a_video_report_duplicating_a_registered_case_is_merged_automatically(stack):
    original = (await report(stack)).json()
    await step(stack, original["id"], "register", 1)
    created = await report(stack, body=north(25, source="video"))
    video = created.json()
    assert (video["status"], video["merged_into"], video["merged_into_number"]) == (
        "merged",
        original["id"],
        original["number"],
    )
    assert created.headers["etag"] == '"2"'
    detail = (await stack.client.get(f"{API}/cases/{video['id']}", headers=stack.as_("reader"))).json()
    assert [(h["action"], h["actor"]) for h in detail["history"]][1] == ("merge", SYSTEM.subject)
    assert original["number"] in detail["history"][1]["note"]
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=4)
    assert [e.type for e in events][-2:] == ["case.case.reported.v1", "case.case.merged.v1"]


async def test_a_video_report_near_a_case_not_yet_registered_is_only_flagged(stack):
    original = (await report(stack)).json()
    video = (await report(stack, body=north(25, source="video"))).json()
    assert (video["status"], video["likely_duplicate_of"]) == ("reported", original["id"])


async def test_the_duplicate_radius_is_a_parameter_of_the_report(stack):
    original = (await report(stack)).json()
    calendar = stack.case_app.state.calendars.calendar
    grid = stack.case_app.state.grid.index
    async with stack.case_runtime.uow() as uow:
        wide = await service.report_case(
            uow, ReportCase.model_validate(north(80)), SYSTEM, calendar, grid=grid, duplicate_radius_m=100
        )
        narrow = await service.report_case(
            uow, ReportCase.model_validate(north(80)), SYSTEM, calendar, grid=grid, duplicate_radius_m=50
        )
        off = await service.report_case(
            uow, ReportCase.model_validate(north(1)), SYSTEM, calendar, grid=grid, duplicate_radius_m=0
        )
    assert str(wide.likely_duplicate_of) == original["id"]
    assert narrow.likely_duplicate_of == wide.id  # 0 m from the report just made
    assert off.likely_duplicate_of is None
