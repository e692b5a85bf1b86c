"""Evaluation (综合评价) against a hand-computed set of cases, the workflow's records of on-time
handling, today's gauges, and refused periods."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from citygrid.clock import CITY_TIMEZONE
from citygrid.testing import serve_app, wait_until
from contract.case import CaseSource, CaseStatus
from services.case.domain.evaluation import Grouping, Period
from services.case.evaluation import TODAY_LOCK, TODAY_SNAPSHOT, compute_today_figures, evaluation_sql
from services.case.main import create_app as create_case_app
from services.case.models import Case, CaseHistory, EvaluationSnapshot
from tests.conftest import case_settings
from tests.test_bad_input import assert_invalid, assert_problem
from tests.test_case_flow import report, step
from tests.test_db_limits import hold_exclusive_lock, lock_waiters

EVALUATION = "/api/case/v1/evaluation"
MARCH = {"from": "2026-03-01T00:00:00+08:00", "to": "2026-04-01T00:00:00+08:00"}


def at(moment: str) -> datetime:
    """``"03-02T10:00"`` → that time in 2026, in the city's time zone."""
    return datetime.fromisoformat(f"2026-{moment}:00+08:00")


def fixture_case(
    number: str,
    district: str,
    status: CaseStatus,
    created: str,
    *,
    street: str | None = None,
    unit: str | None = None,
    registered: str | None = None,
    dispatched: str | None = None,
    handled: str | None = None,
    closed: str | None = None,
    stage: str | None = None,
    deadline: str | None = None,
    overdue: str | None = None,
) -> Case:
    def moment(value: str | None) -> datetime | None:
        return at(value) if value else None

    return Case(
        number=number,
        status=status,
        category_code="20106",
        description=f"fixture {number}",
        lon=113.3,
        lat=23.1,
        district_code=district,
        street_code=street,
        source=CaseSource.INSPECTOR,
        unit=unit,
        stage=stage,
        deadline_at=moment(deadline),
        overdue_at=moment(overdue),
        registered_at=moment(registered),
        dispatched_at=moment(dispatched),
        handled_at=moment(handled),
        closed_at=moment(closed),
        version=1,
        reported_by="fixture",
        created_at=at(created),
        updated_at=max(at(m) for m in (created, registered, dispatched, handled, closed) if m),
    )


def march_cases() -> dict[str, tuple[Case, list[tuple[str, str, str | None]]]]:
    """Each case's timeline and what it counts for in March 2026 (a Tianhe and a Haizhu unit)."""
    return {
        # closed, handled 4 h after dispatch, on time
        "c1": (
            fixture_case(
                "c1", "440106", CaseStatus.CLOSED, "03-02T08:00", street="440106001", unit="u1",
                registered="03-02T09:00", dispatched="03-02T10:00", handled="03-02T14:00", closed="03-02T16:00",
            ),
            [("handle", "03-02T14:00", "03-02T18:00"), ("close", "03-02T16:00", None)],
        ),
        # handled late, reworked, handled again on time 24 h after dispatch, closed: not on time
        "c2": (
            fixture_case(
                "c2", "440106", CaseStatus.CLOSED, "03-03T07:00", street="440106001", unit="u1",
                registered="03-03T07:30", dispatched="03-03T08:00", handled="03-04T08:00", closed="03-04T10:00",
            ),
            [
                ("handle", "03-03T20:00", "03-03T12:00"),
                ("rework", "03-04T06:00", None),
                ("handle", "03-04T08:00", "03-05T08:00"),
            ],
        ),
        # with the unit past its handling deadline, an extension approved
        "c3": (
            fixture_case(
                "c3", "440106", CaseStatus.ACCEPTED, "03-10T08:00", street="440106002", unit="u1",
                registered="03-10T08:30", dispatched="03-10T09:00", stage="handle", deadline="03-10T17:00",
            ),
            [("extension_approved", "03-10T12:00", None)],
        ),
        # reported and registered in February, dispatched at the first instant of March, handled on time
        "c4": (
            fixture_case(
                "c4", "440106", CaseStatus.HANDLED, "02-25T08:00", street="440106002", unit="u1",
                registered="02-25T09:00", dispatched="03-01T00:00", handled="03-01T02:00", stage="verify",
                deadline="03-02T02:00",
            ),
            [("handle", "03-01T02:00", "03-01T08:00")],
        ),
        # reported only: no street resolved, no unit
        "c5": (fixture_case("c5", "440106", CaseStatus.REPORTED, "03-20T08:00", stage="register"), []),
        # dispatched, then returned by the unit: not due to it
        "c6": (
            fixture_case(
                "c6", "440106", CaseStatus.REGISTERED, "03-21T08:00", street="440106001", unit="u1",
                registered="03-21T09:00", dispatched="03-21T10:00", stage="dispatch", deadline="03-21T18:00",
            ),
            [],
        ),
        # closed, handled 2 h after dispatch, on time
        "c7": (
            fixture_case(
                "c7", "440105", CaseStatus.CLOSED, "03-05T06:00", unit="u2",
                registered="03-05T07:00", dispatched="03-05T08:00", handled="03-05T10:00", closed="03-05T11:00",
            ),
            [("handle", "03-05T10:00", "03-05T12:00")],
        ),
        # cancelled after dispatch: due to nobody
        "c8": (
            fixture_case(
                "c8", "440105", CaseStatus.CANCELLED, "03-06T08:00", unit="u2",
                registered="03-06T09:00", dispatched="03-06T10:00",
            ),
            [],
        ),
        # a January case closed in March: counts as closed, nothing else
        "c9": (
            fixture_case(
                "c9", "440105", CaseStatus.CLOSED, "01-10T08:00", unit="u2",
                registered="01-10T09:00", dispatched="01-10T10:00", handled="01-10T12:00", closed="03-02T09:00",
            ),
            [("handle", "01-10T12:00", "01-10T11:00")],
        ),
        # reported at the first instant of April: outside March
        "c10": (fixture_case("c10", "440105", CaseStatus.REPORTED, "04-01T00:00", stage="register"), []),
        # suspended after it was escalated as overdue: still overdue and pending
        "c12": (
            fixture_case(
                "c12", "440105", CaseStatus.SUSPENDED, "03-07T08:00", unit="u2",
                registered="03-07T09:00", dispatched="03-07T10:00", stage="handle", overdue="03-07T18:00",
            ),
            [("overdue", "03-07T18:00", None)],
        ),
    }  # fmt: skip


TIANHE = {
    "key": "440106",
    "reported": 5,  # c1 c2 c3 c5 c6
    "registered": 4,  # c1 c2 c3 c6
    "closed": 2,  # c1 c2
    "due_to_handle": 4,  # c1 c2 c3 c4
    "handled": 3,  # c1 c2 c4
    "handled_on_time": 2,  # c1 c4
    "overdue_pending": 1,  # c3
    "extended": 1,  # c3
    "due_to_close": 4,  # c1 c2 c3 c6
    "closed_of_due": 2,  # c1 c2
    "reworked": 1,  # c2
    "handling_rate": 0.75,
    "on_time_handling_rate": 0.5,
    "overdue_pending_rate": 0.25,
    "extension_rate": 0.25,
    "closure_rate": 0.5,
    "rework_rate": 0.25,
    "average_handling_hours": 10.0,  # 4, 24, 2
    "median_handling_hours": 4.0,
}
HAIZHU = {
    "key": "440105",
    "reported": 3,  # c7 c8 c12
    "registered": 3,  # c7 c8 c12
    "closed": 2,  # c7 c9
    "due_to_handle": 2,  # c7 c12
    "handled": 1,  # c7
    "handled_on_time": 1,
    "overdue_pending": 1,  # c12
    "extended": 0,
    "due_to_close": 2,  # c7 c12
    "closed_of_due": 1,  # c7
    "reworked": 0,
    "handling_rate": 0.5,
    "on_time_handling_rate": 0.5,
    "overdue_pending_rate": 0.5,
    "extension_rate": 0.0,
    "closure_rate": 0.5,
    "rework_rate": 0.0,
    "average_handling_hours": 2.0,
    "median_handling_hours": 2.0,
}
CITY = {
    "key": None,
    "reported": 8,
    "registered": 7,
    "closed": 4,
    "due_to_handle": 6,
    "handled": 4,
    "handled_on_time": 3,
    "overdue_pending": 2,
    "extended": 1,
    "due_to_close": 6,
    "closed_of_due": 3,
    "reworked": 1,
    "handling_rate": pytest.approx(4 / 6),
    "on_time_handling_rate": 0.5,
    "overdue_pending_rate": pytest.approx(2 / 6),
    "extension_rate": pytest.approx(1 / 6),
    "closure_rate": 0.5,
    "rework_rate": pytest.approx(1 / 6),
    "average_handling_hours": 8.0,  # 4, 24, 2, 2
    "median_handling_hours": 3.0,
}


@pytest.fixture
async def march(stack):
    async with stack.case_runtime.uow() as uow:
        cases = march_cases()
        for case, _ in cases.values():
            uow.session.add(case)
        await uow.session.flush()
        for case, history in cases.values():
            for action, moment, deadline in history:
                uow.session.add(
                    CaseHistory(
                        case_id=case.id,
                        action=action,
                        from_status=case.status,
                        to_status=case.status,
                        actor="fixture",
                        actor_name="fixture",
                        at=at(moment),
                        deadline_at=at(deadline) if deadline else None,
                    )
                )
    return stack


async def evaluate(stack, consumer="reader", **query):
    response = await stack.client.get(EVALUATION, params=query, headers=stack.as_(consumer))
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_figures_of_a_period_per_district_match_the_hand_computed_ones(march):
    answer = await evaluate(march, **MARCH, by="district")
    assert answer["from"] == MARCH["from"]
    assert answer["to"] == MARCH["to"]
    assert answer["by"] == "district"
    assert answer["items"] == [HAIZHU, TIANHE]
    assert answer["total"] == CITY


async def test_limiting_to_a_district_gives_that_districts_figures_as_the_total(march):
    answer = await evaluate(march, **MARCH, by="district", district="440105")
    assert answer["items"] == [HAIZHU]
    assert answer["total"] == {**HAIZHU, "key": None}


async def test_cases_are_grouped_by_unit_and_street_with_the_cases_lacking_one_last(march):
    by_unit = {item["key"]: item for item in (await evaluate(march, **MARCH, by="unit"))["items"]}
    assert list(by_unit) == ["u1", "u2", None]
    assert (by_unit["u1"]["reported"], by_unit["u1"]["due_to_handle"], by_unit["u1"]["handled_on_time"]) == (
        4,
        4,
        2,
    )
    assert (by_unit["u2"]["reported"], by_unit["u2"]["closed"], by_unit["u2"]["overdue_pending"]) == (3, 2, 1)
    assert (by_unit[None]["reported"], by_unit[None]["registered"], by_unit[None]["handling_rate"]) == (
        1,
        0,
        None,
    )

    by_street = {item["key"]: item for item in (await evaluate(march, **MARCH, by="street"))["items"]}
    assert list(by_street) == ["440106001", "440106002", None]
    assert [by_street["440106001"][k] for k in ("reported", "due_to_handle", "handled_on_time")] == [3, 2, 1]
    assert [by_street["440106002"][k] for k in ("reported", "due_to_handle", "overdue_pending")] == [1, 2, 1]
    assert by_street[None]["reported"] == 4

    by_category = (await evaluate(march, **MARCH, by="category"))["items"]
    assert [item["key"] for item in by_category] == ["20106"]
    assert by_category[0] == {**CITY, "key": "20106"}


async def test_a_period_without_cases_has_zero_counts_and_no_rates(march):
    answer = await evaluate(march, **{"from": "2025-03-01T00:00:00+08:00", "to": "2025-04-01T00:00:00+08:00"})
    assert answer["items"] == []
    assert answer["total"]["reported"] == 0
    assert answer["total"]["closure_rate"] is None
    assert answer["total"]["median_handling_hours"] is None


async def test_the_workflow_records_whether_each_handling_met_its_deadline(stack):
    on_time = (await report(stack)).json()["id"]
    late = (await report(stack)).json()["id"]
    for case_id in (on_time, late):
        assert (await step(stack, case_id, "register", 1)).status_code == 200
        assert (await step(stack, case_id, "dispatch", 2, {"unit": "tianhe-sanitation"})).status_code == 200
        assert (await step(stack, case_id, "accept", 3)).status_code == 200
    async with stack.case_runtime.uow() as uow:
        await uow.session.execute(
            update(Case)
            .where(Case.id == uuid.UUID(late))
            # Already marked overdue, as the scan would: the service's own overdue scan (every 30 s)
            # then leaves it alone instead of escalating it to version 5 under the test's handle.
            .values(deadline_at=func.now() - timedelta(minutes=1), overdue_at=func.now())
        )
    for case_id in (on_time, late):
        assert (await step(stack, case_id, "handle", 4)).status_code == 200

    async with stack.case_runtime.db() as session:
        handlings = {
            row.case_id: row
            for row in await session.scalars(select(CaseHistory).where(CaseHistory.action == "handle"))
        }
        registered = await session.scalar(select(func.count()).where(Case.registered_at.is_not(None)))
    assert all(row.deadline_at is not None for row in handlings.values())
    assert {str(k): row.at <= row.deadline_at for k, row in handlings.items()} == {on_time: True, late: False}
    assert registered == 2

    now = datetime.now(CITY_TIMEZONE)
    around_now = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    [unit] = (await evaluate(stack, **around_now, by="unit"))["items"]
    assert unit["key"] == "tianhe-sanitation"
    counts = [unit[k] for k in ("reported", "registered", "due_to_handle", "handled", "handled_on_time")]
    assert counts == [2, 2, 2, 2, 1]
    assert unit["on_time_handling_rate"] == 0.5


async def test_todays_figures_per_district_are_prometheus_gauges(stack):
    closed = (await report(stack)).json()["id"]
    for action, version, body in [
        ("register", 1, None),
        ("dispatch", 2, {"unit": "tianhe-sanitation"}),
        ("accept", 3, None),
        ("handle", 4, None),
        ("verify", 5, {"passed": True}),
    ]:
        assert (await step(stack, closed, action, version, body)).status_code == 200
    await report(stack)  # reported, not registered

    [job] = [job for job in stack.case_runtime.jobs if job.name == "evaluation-gauges"]
    expected = [
        'citygrid_case_today_reported_cases{district="440106"} 2.0',
        'citygrid_case_today_registered_cases{district="440106"} 1.0',
        'citygrid_case_today_closed_cases{district="440106"} 1.0',
        'citygrid_case_today_due_to_handle_cases{district="440106"} 1.0',
        'citygrid_case_today_on_time_handling_ratio{district="440106"} 1.0',
        'citygrid_case_today_closure_ratio{district="440106"} 1.0',
        'citygrid_case_today_rework_ratio{district="440106"} 0.0',
        'citygrid_case_today_extension_ratio{district="440106"} 0.0',
    ]

    async def shown() -> bool:
        await expire_todays_figures(stack)  # stored before these cases existed, maybe: recompute
        if await job.run() != 1:
            return False  # the service's own run held the lock: the next round
        metrics = (await stack.client.get(f"{stack.case_url}/metrics")).text
        return all(line in metrics for line in expected)

    # (A run of the service's own job may hold the lock at that moment: then the next round.)
    await wait_until(shown)
    metrics = (await stack.client.get(f"{stack.case_url}/metrics")).text
    assert "# TYPE citygrid_case_today_handling_median_seconds gauge" in metrics
    assert "citygrid_case_today_refreshed_timestamp_seconds " in metrics


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (
            {"from": "2026-03-02T00:00:00+08:00", "to": "2026-03-01T00:00:00+08:00"},
            "evaluation.invalid_period",
        ),
        (
            {"from": "2026-03-01T00:00:00+08:00", "to": "2026-03-01T00:00:00+08:00"},
            "evaluation.invalid_period",
        ),
        (
            {"from": "2024-01-01T00:00:00+08:00", "to": "2026-01-01T00:00:00+08:00"},
            "evaluation.invalid_period",
        ),
    ],
)
async def test_a_period_that_ends_before_it_starts_or_spans_over_a_year_is_refused(stack, query, code):
    response = await stack.client.get(EVALUATION, params=query, headers=stack.as_("reader"))
    assert_problem(response, 422, code)


@pytest.mark.parametrize(
    ("query", "loc", "error_type"),
    [
        ({"to": MARCH["to"]}, ["query", "from"], "missing"),
        ({**MARCH, "from": "yesterday"}, ["query", "from"], "datetime_from_date_parsing"),
        ({**MARCH, "to": "9999-01-01T00:00:00+08:00"}, ["query", "to"], "value_error"),
        ({**MARCH, "by": "province"}, ["query", "by"], "enum"),
        ({**MARCH, "district": "999999"}, ["query", "district"], "value_error"),
    ],
)
async def test_bad_evaluation_parameters_are_refused_naming_the_parameter(stack, query, loc, error_type):
    response = await stack.client.get(EVALUATION, params=query, headers=stack.as_("reader"))
    assert_invalid(response, loc, error_type)


async def expire_todays_figures(stack, age: timedelta = timedelta(days=1)) -> None:
    """Make the stored figures ``age`` old (if there are any)."""
    async with stack.case_runtime.uow() as uow:
        await uow.session.execute(
            update(EvaluationSnapshot)
            .where(EvaluationSnapshot.name == TODAY_SNAPSHOT)
            .values(computed_at=EvaluationSnapshot.computed_at - age)
        )


async def stored_figures(stack) -> EvaluationSnapshot | None:
    async with stack.case_runtime.db() as session:
        found: EvaluationSnapshot | None = await session.get(EvaluationSnapshot, TODAY_SNAPSHOT)
        return found


async def test_todays_figures_are_computed_once_across_replicas_and_every_replica_shows_them(
    stack, infrastructure, databases
):
    await report(stack)
    second = create_case_app(case_settings(infrastructure, databases))
    async with serve_app(second) as second_url:
        runtimes = [stack.case_runtime, second.state.kit]
        # Fresh figures of this case, then 30 s old: stale for a 10 s maximum age, still fresh for
        # the services' own jobs (60 s), which therefore leave them alone.
        await wait_until(lambda: compute_today_figures(runtimes[0].analytics, max_age=timedelta(0)))
        await expire_todays_figures(stack, timedelta(seconds=30))
        before = await stored_figures(stack)
        assert before is not None

        async def six_at_once() -> int:
            results = await asyncio.gather(
                *(compute_today_figures(r.analytics, max_age=timedelta(seconds=10)) for r in runtimes * 3)
            )
            assert sum(results) <= 1, results  # never two computations of the same figures
            return sum(results)

        # All six skip only when a job's own run held the lock right then: the next round computes.
        await wait_until(six_at_once)
        after = await stored_figures(stack)
        assert after is not None
        assert after.computed_at > before.computed_at
        assert after.groups[0]["key"] == "440106"
        assert after.groups[0]["counts"]["reported"] == 1

        # Both replicas show the stored figures, with the same time stamp.
        pages = []
        for runtime, url in ((runtimes[0], stack.case_url), (runtimes[1], second_url)):
            [job] = [job for job in runtime.jobs if job.name == "evaluation-gauges"]
            assert await job.run() == 1
            pages.append((await stack.client.get(f"{url}/metrics")).text)
        for page in pages:
            assert 'citygrid_case_today_reported_cases{district="440106"} 1.0' in page
        stamps = [
            [line for line in page.splitlines() if line.startswith("citygrid_case_today_refreshed_timestamp")]
            for page in pages
        ]
        assert stamps[0] == stamps[1]
        assert float(stamps[0][0].split()[-1]) == after.computed_at.timestamp()


async def test_a_replica_that_cannot_take_the_lock_computes_nothing_and_shows_the_stored_figures(
    stack, databases
):
    await report(stack)
    runtime = stack.case_runtime
    await wait_until(lambda: compute_today_figures(runtime.analytics, max_age=timedelta(0)))
    # Stale for the call below (10 s), still fresh for the service's own job (60 s).
    await expire_todays_figures(stack, timedelta(seconds=30))
    stale = await stored_figures(stack)
    assert stale is not None
    holder = await asyncpg_connection(databases["case"])
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", TODAY_LOCK)
        assert await compute_today_figures(runtime.analytics, max_age=timedelta(seconds=10)) is False
        [job] = [job for job in runtime.jobs if job.name == "evaluation-gauges"]
        assert await job.run() == 1  # the stored district, shown
    finally:
        await holder.close()
    assert (await stored_figures(stack)).computed_at == stale.computed_at  # type: ignore[union-attr]


async def asyncpg_connection(url: str) -> Any:
    import asyncpg

    from citygrid.settings import to_libpq_url

    return await asyncpg.connect(to_libpq_url(url))


def plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, CTEs and sub-plans included."""
    if isinstance(plan, str):
        plan = json.loads(plan)
    found: list[dict[str, Any]] = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.get("Plans", []))
    return found


# A year of a city's cases, one every ten minutes, each with its registration and a late handling
# every tenth: statistics like production's, so the plan below is the one a city's database picks.
CITY_YEAR_SQL = [
    """
    INSERT INTO cases (id, number, status, category_code, description, lon, lat, district_code,
                       source, reported_by, version, created_at, registered_at, dispatched_at,
                       closed_at, updated_at)
    SELECT gen_random_uuid(), 'PLAN-' || g, 'closed', 'A0' || (g % 9 + 1), 'plan', 113.3, 23.1,
           '4401' || lpad((g % 11 + 3)::text, 2, '0'), 'hotline', 'plan', 1, at,
           at + interval '5 minutes', at + interval '10 minutes', at + interval '1 day', at
    FROM generate_series(1, 52000) AS g, LATERAL (SELECT now() - g * interval '10 minutes' AS at) t
    """,
    """
    INSERT INTO case_history (id, case_id, action, to_status, actor, actor_name, at, deadline_at)
    SELECT gen_random_uuid(), c.id, a.action, 'closed', 'plan', 'plan', c.created_at + a.after,
           c.created_at + interval '1 hour'
    FROM cases c, LATERAL (VALUES ('register', interval '5 minutes'),
                                  ('handle', CASE WHEN c.number LIKE '%0' THEN interval '2 hours'
                                                  ELSE interval '30 minutes' END)) a(action, after)
    WHERE c.number LIKE 'PLAN-%'
    """,
    "ANALYZE cases",
    "ANALYZE case_history",
]


async def test_a_periods_cases_and_history_marks_are_read_through_indexes(stack):
    """On a year of cases (written and analysed in a transaction that is rolled back), the plan the
    planner picks for a day reads the period's four range indexes and the history's partial index,
    and neither table by a sequential scan, whatever the grouping and with or without a district."""
    period = Period.city_day(datetime.now(CITY_TIMEZONE))
    async with stack.case_runtime.analytics() as session, session.begin():
        for statement in CITY_YEAR_SQL:
            await session.execute(text(statement))
        for by in Grouping:
            for district in (None, "440106"):
                parameters: dict[str, Any] = {"start": period.start, "end": period.end}
                if district is not None:
                    parameters["district"] = district
                sql = "EXPLAIN (FORMAT JSON) " + evaluation_sql(by, district=district is not None)
                nodes = plan_nodes((await session.execute(text(sql), parameters)).scalar_one())
                scans = {(node.get("Relation Name"), node["Node Type"]) for node in nodes}
                indexes = {node["Index Name"] for node in nodes if "Index Name" in node}
                assert ("cases", "Seq Scan") not in scans, (by, district, scans)
                assert ("case_history", "Seq Scan") not in scans, (by, district, scans)
                assert "ix_case_history_evaluation_marks" in indexes, (by, district, indexes)
                if district is None:
                    assert {
                        "ix_cases_created",
                        "ix_cases_registered",
                        "ix_cases_dispatched",
                        "ix_cases_closed",
                    } <= indexes, (by, indexes)
        await session.rollback()


async def test_an_evaluation_past_its_limit_is_stopped_and_answered_with_a_problem(stack, databases):
    """``CITYGRID_EVALUATION_TIMEOUT_SECONDS`` (8 s, below the gateway's 10 s) set small: a query that
    cannot finish in it is stopped by the server and the client gets a 503 problem, not a 504."""
    stack.case_app.state.evaluation_timeout_seconds = 0.3
    blocker = await hold_exclusive_lock(databases["case"], "cases")
    # The gauges' job would evaluate on the analytics engine too: it finds the lock taken and skips.
    await blocker.fetchval("SELECT pg_advisory_lock($1)", TODAY_LOCK)
    try:
        response = await stack.client.get(EVALUATION, params=MARCH, headers=stack.as_("reader"))
        still_waiting = await lock_waiters(databases["case"], "case-analytics")
    finally:
        await blocker.close()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["limit"], problem["timeout_seconds"]) == (
        "evaluation.timeout",
        "statement",
        0.3,
    )
    assert "shorter period" in problem["detail"]
    assert still_waiting == 0  # stopped, not running on after its client got the answer
