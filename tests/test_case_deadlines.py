"""Deadlines on the work calendar, the overdue scan across replicas, and the catalogue's admin API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime

import httpx
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update

from citygrid.auth import PRINCIPAL_HEADER, Principal
from citygrid.db import create_engine, create_sessionmaker
from citygrid.testing import serve_app, stream_events, wait_until
from services.case.catalogue import CALENDAR as CALENDAR_VERSION
from services.case.catalogue import reference_version
from services.case.domain.calendar import TimeLimit, load_calendar
from services.case.main import create_app as create_case_app
from services.case.models import Case, CaseHistory
from services.case.overdue import escalate_overdue
from tests.conftest import case_settings
from tests.test_case_flow import REPORT, report, step

CALENDAR = load_calendar()


async def test_a_report_is_due_for_registration_by_its_category_limit_on_the_work_calendar(stack):
    case = (await report(stack)).json()
    assert case["stage"] == "register"
    created = datetime.fromisoformat(case["created_at"])
    category = (await stack.client.get("/api/case/v1/categories/20106", headers=stack.as_("reader"))).json()
    limit = category["limits"]["register"]
    expected = CALENDAR.add(created, TimeLimit(limit["amount"], limit["unit"]))
    assert datetime.fromisoformat(case["deadline_at"]) == expected
    assert case["deadline_at"].endswith("+08:00")


async def test_each_step_moves_the_clock_to_the_next_stage_and_suspension_stops_it(stack):
    case_id = (await report(stack)).json()["id"]
    stages = []
    for action, version, body in [
        ("register", 1, None),
        ("dispatch", 2, {"unit": "tianhe-sanitation"}),
        ("accept", 3, None),
        ("suspend", 4, {"note": "permit pending"}),
        ("resume", 5, None),
        ("handle", 6, None),
        ("verify", 7, {"passed": True}),
    ]:
        answer = (await step(stack, case_id, action, version, body)).json()
        stages.append((answer["stage"], answer["deadline_at"] is not None))
    assert stages == [
        ("dispatch", True),
        ("handle", True),
        ("handle", True),
        ("handle", False),
        ("handle", True),
        ("verify", True),
        (None, False),
    ]


async def test_an_unknown_or_retired_category_is_refused(stack):
    unknown = await stack.client.post(
        "/api/case/v1/cases", json={**REPORT, "category_code": "29999"}, headers=stack.as_("clerk")
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "case.unknown_category"
    retired = await stack.client.patch(
        "/api/case/v1/admin/categories/20106", json={"active": False}, headers=stack.as_("admin")
    )
    assert retired.status_code == 200
    refused = await stack.client.post("/api/case/v1/cases", json=REPORT, headers=stack.as_("clerk"))
    assert refused.json()["code"] == "case.unknown_category"


async def test_an_admin_changes_a_limit_and_new_cases_follow_it(stack):
    limits = {
        "register": {"amount": 3, "unit": "natural_hours"},
        "dispatch": {"amount": 1, "unit": "working_hours"},
        "handle": {"amount": 1, "unit": "working_days"},
        "verify": {"amount": 2, "unit": "working_hours"},
    }
    refused = await stack.client.patch(
        "/api/case/v1/admin/categories/20106", json={"limits": limits}, headers=stack.as_("clerk")
    )
    assert refused.status_code == 403
    partial = await stack.client.patch(
        "/api/case/v1/admin/categories/20106",
        json={"limits": {"register": limits["register"]}},
        headers=stack.as_("admin"),
    )
    assert partial.status_code == 422
    changed = await stack.client.patch(
        "/api/case/v1/admin/categories/20106", json={"limits": limits}, headers=stack.as_("admin")
    )
    assert changed.json()["limits"]["register"] == {"amount": 3.0, "unit": "natural_hours"}
    case = (await report(stack)).json()
    hours = (
        datetime.fromisoformat(case["deadline_at"]) - datetime.fromisoformat(case["created_at"])
    ).total_seconds()
    assert hours == 3 * 3600


async def test_an_admin_sets_a_years_holidays(stack):
    document = {
        "year": 2030,
        "source": "test notice",
        "holidays": [{"name": "元旦", "dates": ["2030-01-01"]}],
        "makeup_workdays": ["2030-01-05"],
    }
    stored = await stack.client.put(
        "/api/case/v1/admin/calendars/2030", json=document, headers=stack.as_("admin")
    )
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "year": 2030,
        "source": "test notice",
        "holidays": 1,
        "makeup_workdays": 1,
        "overridden": True,
    }
    years = (await stack.client.get("/api/case/v1/admin/calendars", headers=stack.as_("admin"))).json()
    assert {y["year"] for y in years} >= {2025, 2026, 2030}
    bad = {**document, "makeup_workdays": ["2030-01-01"]}
    refused = await stack.client.put(
        "/api/case/v1/admin/calendars/2030", json=bad, headers=stack.as_("admin")
    )
    assert refused.status_code == 422
    assert refused.json()["code"] == "case.invalid_calendar"
    wrong_year = await stack.client.put(
        "/api/case/v1/admin/calendars/2031", json=document, headers=stack.as_("admin")
    )
    assert wrong_year.status_code == 422


async def test_overdue_cases_are_escalated_once_even_with_two_replicas_scanning(
    stack, infrastructure, databases
):
    ids = [(await report(stack)).json()["id"] for _ in range(30)]
    async with stack.case_runtime.uow() as uow:
        await uow.session.execute(
            update(Case).values(deadline_at=func.now() - func.make_interval(0, 0, 0, 0, 1))
        )
    second_replica = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(second_replica):
        runtimes = [stack.case_runtime, second_replica.state.kit]
        counts = await asyncio.gather(*(escalate_overdue(r, batch_size=7) for r in runtimes * 3))

        async def all_marked() -> bool:
            # A round that finds nothing may only have skipped rows a replica's own scan holds.
            await asyncio.gather(*(escalate_overdue(r, batch_size=7) for r in runtimes))
            async with stack.case_runtime.db() as session:
                left = await session.scalar(
                    select(func.count()).select_from(Case).where(Case.overdue_at.is_(None))
                )
            return left == 0

        await wait_until(all_marked)
    assert sum(counts) <= 30
    async with stack.case_runtime.db() as session:
        escalations = (
            await session.execute(
                select(CaseHistory.case_id, func.count())
                .where(CaseHistory.action == "overdue")
                .group_by(CaseHistory.case_id)
            )
        ).all()
        unmarked = await session.scalar(
            select(func.count()).select_from(Case).where(Case.overdue_at.is_(None))
        )
    assert sorted(str(case_id) for case_id, _ in escalations) == sorted(ids)
    assert {count for _, count in escalations} == {1}
    assert unmarked == 0
    events = await stream_events(stack.infrastructure.nats_url, "CASE", at_least=60)
    overdue = [e for e in events if e.type == "case.case.overdue.v1"]
    assert len(overdue) == 30
    assert {e.data["escalated_to"] for e in overdue} == {"supervisor"}
    # The escalation is a new version of the case, ordered after the step before it.
    previous = {e.subject: e for e in events if e.type != "case.case.overdue.v1"}
    for event in overdue:
        assert event.aggregateversion == previous[event.subject].aggregateversion + 1
        assert event.data["version"] == event.aggregateversion
        assert event.data["occurred_at"] > previous[event.subject].data["occurred_at"]
    detail = (await stack.client.get(f"/api/case/v1/cases/{ids[0]}", headers=stack.as_("reader"))).json()
    assert detail["overdue_at"] is not None
    assert detail["history"][-1]["action"] == "overdue"
    assert detail["version"] == 2


async def escalated(stack, case_id) -> bool:
    """Run the overdue scan once; whether the case is marked overdue now (the service's own scan,
    running beside the test, may be the one that marked it)."""
    await escalate_overdue(stack.case_runtime)
    async with stack.case_runtime.db() as session:
        marked = await session.scalar(select(Case.overdue_at).where(Case.id == uuid.UUID(str(case_id))))
    return marked is not None


async def test_a_new_stage_clears_the_overdue_mark(stack):
    case_id = (await report(stack)).json()["id"]
    async with stack.case_runtime.uow() as uow:
        await uow.session.execute(
            update(Case).values(deadline_at=func.now() - func.make_interval(0, 0, 0, 0, 1))
        )
    await wait_until(lambda: escalated(stack, case_id))  # by this call or the service's own scan
    # The escalation made version 2: a client still holding version 1 reloads first.
    assert (await step(stack, case_id, "register", 1)).status_code == 412
    registered = (await step(stack, case_id, "register", 2)).json()
    assert registered["overdue_at"] is None
    assert registered["stage"] == "dispatch"


ADMIN = Principal(
    subject="user:admin",
    kind="person",
    name="Admin",
    roles=frozenset({"supervisor"}),
    scopes=frozenset({"admin", "cases:read", "cases:write"}),
)
HOLIDAY_2030 = {
    "year": 2030,
    "source": "test notice",
    "holidays": [{"name": "元旦", "dates": ["2030-01-01"]}],
    "makeup_workdays": ["2030-01-05"],
}


async def test_a_calendar_edit_through_one_replica_is_in_force_in_another_after_its_refresh(
    stack, infrastructure, databases
):
    second = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(second) as second_url:
        first_calendars, second_calendars = stack.case_app.state.calendars, second.state.calendars
        # 2030 is not shipped: New Year's Day is a Tuesday, a working day, in both replicas.
        assert first_calendars.calendar.is_workday(date(2030, 1, 1))
        assert second_calendars.calendar.is_workday(date(2030, 1, 1))
        stored = await stack.client.put(
            "/api/case/v1/admin/calendars/2030", json=HOLIDAY_2030, headers=stack.as_("admin")
        )
        assert stored.status_code == 200, stored.text
        # The replica that served it: at once.
        assert not first_calendars.calendar.is_workday(date(2030, 1, 1))
        assert first_calendars.calendar.is_workday(date(2030, 1, 5))  # a Saturday made a working day
        # The other one at its next refresh (a periodic job, CITYGRID_CALENDAR_REFRESH_SECONDS).
        await wait_until(lambda: not second_calendars.calendar.is_workday(date(2030, 1, 1)), timeout=20.0)
        assert second_calendars.calendar.is_workday(date(2030, 1, 5))
        assert second_calendars.version == first_calendars.version == 1

        # And the other way round, through the second replica's own API.
        headers = {PRINCIPAL_HEADER: infrastructure.token(ADMIN, "case")}
        moved = {**HOLIDAY_2030, "holidays": [{"name": "元旦", "dates": ["2030-01-02"]}]}
        async with httpx.AsyncClient(base_url=second_url, timeout=20.0) as client:
            assert (
                await client.put("/v1/admin/calendars/2030", json=moved, headers=headers)
            ).status_code == 200
        await wait_until(lambda: not first_calendars.calendar.is_workday(date(2030, 1, 2)), timeout=20.0)
        assert first_calendars.calendar.is_workday(date(2030, 1, 1))
        async with stack.case_runtime.db() as session:
            assert await reference_version(session, CALENDAR_VERSION) == 2


async def test_the_calendar_refresh_reads_one_row_when_nothing_changed(stack):
    calendars = stack.case_app.state.calendars
    engine = create_engine(stack.case_runtime.settings)  # of this test alone: only its statements
    sessions = create_sessionmaker(engine)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    try:
        await calendars.refresh_if_changed(sessions)  # caught up with whatever happened before
        sa_event.listen(engine.sync_engine, "before_cursor_execute", record)
        assert await calendars.refresh_if_changed(sessions) == 0
    finally:
        await engine.dispose()
    assert len(seen) == 1
    assert "FROM reference_versions" in seen[0]
    assert "calendar_years" not in seen[0]


async def test_a_category_edit_through_one_replica_is_in_force_in_another_at_once(
    stack, infrastructure, databases
):
    """Categories are read per transaction, never cached: nothing to refresh."""
    second = create_case_app(case_settings(infrastructure, databases))
    async with (
        serve_app(second) as second_url,
        httpx.AsyncClient(base_url=second_url, timeout=20.0) as client,
    ):
        headers = {PRINCIPAL_HEADER: infrastructure.token(ADMIN, "case")}
        retired = await stack.client.patch(
            "/api/case/v1/admin/categories/20106", json={"active": False}, headers=stack.as_("admin")
        )
        assert retired.status_code == 200
        refused = await client.post("/v1/cases", json=REPORT, headers=headers)
        assert refused.status_code == 422
        assert refused.json()["code"] == "case.unknown_category"
