"""Likely duplicates: flagged on report, merged by an operator, merged automatically from video."""

from __future__ import annotations

import asyncio
import functools
import uuid

from sqlalchemy import text

from citygrid.testing import stream_events, wait_until
from contract.case import CaseStatus
from services.case import service
from services.case.domain.workflow import Action
from services.case.schemas import ReportCase
from services.case.units import SYSTEM
from tests.test_bad_input import assert_problem
from tests.test_case_flow import REPORT, dispatched, report, step

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


# -- merging while the target changes -----------------------------------------------------------
#
# A merge locks the report and the case it is merged into (the target FOR SHARE), lower id first,
# and reads the target again under that lock. Each interleaving below is forced, not hoped for:
# the first transaction is held open until PostgreSQL shows the second one waiting for its lock.


async def handled_case(stack) -> str:
    """A case handled by its unit: the next step, a passed verification, closes it (version 5)."""
    case_id = await dispatched(stack)
    assert (await step(stack, case_id, "accept", 3)).status_code == 200
    assert (await step(stack, case_id, "handle", 4)).status_code == 200
    return case_id


async def backend_pid(session) -> int:
    return int(await session.scalar(text("SELECT pg_backend_pid()")))


async def blocked_by(stack, pid: int) -> bool:
    """Whether some other database session is waiting for a lock ``pid`` holds."""
    async with stack.case_runtime.db() as session:
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
            ),
            {"pid": pid},
        )
    return bool(waiting)


async def case_of(stack, case_id: str) -> dict:
    return (await stack.client.get(f"{API}/cases/{case_id}", headers=stack.as_("reader"))).json()


async def test_a_merge_into_a_case_being_closed_waits_and_is_refused_with_409(stack):
    calendar = stack.case_app.state.calendars.calendar
    for _ in range(3):
        target = await handled_case(stack)
        duplicate = (await report(stack, body=north(10))).json()["id"]
        async with stack.case_runtime.uow() as closing:
            closed = await service.transition(
                closing, uuid.UUID(target), Action.CLOSE, SYSTEM, expected_version=5, calendar=calendar
            )
            assert closed.status is CaseStatus.CLOSED
            closer = await backend_pid(closing.session)
            merging = asyncio.create_task(step(stack, duplicate, "merge", 1, {"into": target}))
            await wait_until(functools.partial(blocked_by, stack, closer))  # the merge waits for the close
            assert not merging.done()
        refused = await merging  # the close committed: the merge sees a closed case
        problem = assert_problem(refused, 409, "case.invalid_merge")
        assert "closed" in problem["detail"]
        assert problem["target_status"] == "closed"
        after = await case_of(stack, duplicate)
        assert (after["status"], after["merged_into"], after["version"]) == ("reported", None, 1)


async def test_a_close_of_a_case_a_report_is_being_merged_into_waits_for_the_merge(stack):
    calendar = stack.case_app.state.calendars.calendar
    for _ in range(3):
        target = await handled_case(stack)
        duplicate = (await report(stack, body=north(10))).json()["id"]
        async with stack.case_runtime.uow() as merging:
            merged = await service.transition(
                merging,
                uuid.UUID(duplicate),
                Action.MERGE,
                SYSTEM,
                expected_version=1,
                calendar=calendar,
                merge_into=uuid.UUID(target),
            )
            assert merged.status is CaseStatus.MERGED
            merger = await backend_pid(merging.session)
            closing = asyncio.create_task(step(stack, target, "verify", 5, {"passed": True}))
            await wait_until(functools.partial(blocked_by, stack, merger))  # the close waits for the merge
            assert not closing.done()
        closed = await closing
        assert closed.status_code == 200, closed.text
        assert closed.json()["status"] == "closed"
        after = await case_of(stack, duplicate)
        assert (after["status"], after["merged_into"]) == ("merged", target)


async def test_merges_and_a_close_racing_on_one_case_never_merge_into_a_closed_one(stack):
    """No forcing here: whatever order PostgreSQL picks, a merge either went first (and the
    close after it) or is refused with 409; two merges into one case never wait on each other
    into a deadlock, and nothing answers 500."""
    outcomes = set()
    for _ in range(4):
        target = await handled_case(stack)
        duplicates = [(await report(stack, body=north(10 + n))).json()["id"] for n in range(2)]
        *merges, close = await asyncio.gather(
            *(step(stack, duplicate, "merge", 1, {"into": target}) for duplicate in duplicates),
            step(stack, target, "verify", 5, {"passed": True}),
        )
        assert close.status_code == 200, close.text
        for duplicate, merge in zip(duplicates, merges, strict=True):
            after = await case_of(stack, duplicate)
            if merge.status_code == 200:
                assert after["merged_into"] == target
                outcomes.add("merged first")
            else:
                assert_problem(merge, 409, "case.invalid_merge")
                assert (after["status"], after["merged_into"]) == ("reported", None)
                outcomes.add("refused")
    assert outcomes  # each round ended in one of the two allowed ways
