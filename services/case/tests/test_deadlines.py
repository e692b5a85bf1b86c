"""Stage clocks: which limit runs after each step, and how suspension pauses it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from citygrid.clock import CITY_TIMEZONE
from contract.case import CaseStatus as S
from services.case.domain.calendar import LimitUnit, load_calendar
from services.case.domain.categories import Stage, StageLimit
from services.case.domain.deadlines import Clock, after_step
from services.case.domain.workflow import Action

CALENDAR = load_calendar()
LIMITS = {
    Stage.REGISTER: StageLimit(amount=0.5, unit=LimitUnit.WORKING_HOURS),
    Stage.DISPATCH: StageLimit(amount=0.5, unit=LimitUnit.WORKING_HOURS),
    Stage.HANDLE: StageLimit(amount=4, unit=LimitUnit.WORKING_HOURS),
    Stage.VERIFY: StageLimit(amount=2, unit=LimitUnit.WORKING_HOURS),
}
URGENT = LIMITS | {Stage.HANDLE: StageLimit(amount=2, unit=LimitUnit.NATURAL_HOURS)}
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=CITY_TIMEZONE)


def test_a_new_report_must_be_registered_within_its_limit():
    clock = after_step(None, S.REPORTED, MONDAY_10, Clock.stopped(), LIMITS, CALENDAR)
    assert clock == Clock(Stage.REGISTER, MONDAY_10, MONDAY_10 + timedelta(minutes=30))


@pytest.mark.parametrize(
    ("action", "status", "stage"),
    [
        (Action.REGISTER, S.REGISTERED, Stage.DISPATCH),
        (Action.RETURN, S.REGISTERED, Stage.DISPATCH),
        (Action.DISPATCH, S.DISPATCHED, Stage.HANDLE),
        (Action.REWORK, S.ACCEPTED, Stage.HANDLE),
        (Action.HANDLE, S.HANDLED, Stage.VERIFY),
    ],
)
def test_each_stage_starts_its_own_clock(action, status, stage):
    expected_deadline = CALENDAR.add(MONDAY_10, _limit(LIMITS[stage]))
    clock = after_step(action, status, MONDAY_10, Clock.stopped(), LIMITS, CALENDAR)
    assert clock == Clock(stage, MONDAY_10, expected_deadline)


def test_accepting_does_not_restart_the_handling_clock():
    dispatched = after_step(Action.DISPATCH, S.DISPATCHED, MONDAY_10, Clock.stopped(), LIMITS, CALENDAR)
    accepted = after_step(
        Action.ACCEPT, S.ACCEPTED, MONDAY_10 + timedelta(hours=1), dispatched, LIMITS, CALENDAR
    )
    assert accepted == dispatched


@pytest.mark.parametrize("status", [S.CLOSED, S.REJECTED, S.MERGED, S.CANCELLED])
def test_a_final_case_has_no_clock(status):
    running = after_step(Action.DISPATCH, S.DISPATCHED, MONDAY_10, Clock.stopped(), LIMITS, CALENDAR)
    assert after_step(Action.CANCEL, status, MONDAY_10, running, LIMITS, CALENDAR) == Clock.stopped()


def test_suspension_pauses_the_clock_and_resuming_grants_what_was_left():
    dispatched = after_step(Action.DISPATCH, S.DISPATCHED, MONDAY_10, Clock.stopped(), LIMITS, CALENDAR)
    suspended = after_step(
        Action.SUSPEND, S.SUSPENDED, MONDAY_10 + timedelta(hours=1), dispatched, LIMITS, CALENDAR
    )
    assert suspended.deadline_at is None
    assert suspended.paused_remaining_seconds == pytest.approx(3 * 3600)
    # Resumed on Wednesday at 09:00: three working hours from then.
    wednesday_9 = datetime(2026, 11, 25, 9, 0, tzinfo=CITY_TIMEZONE)
    resumed = after_step(Action.RESUME, S.ACCEPTED, wednesday_9, suspended, LIMITS, CALENDAR)
    assert resumed.stage is Stage.HANDLE
    assert resumed.deadline_at == datetime(2026, 11, 25, 12, 0, tzinfo=CITY_TIMEZONE)


def test_an_urgent_clock_counts_natural_hours_through_a_suspension():
    friday_17 = datetime(2026, 11, 27, 17, 0, tzinfo=CITY_TIMEZONE)
    dispatched = after_step(Action.DISPATCH, S.DISPATCHED, friday_17, Clock.stopped(), URGENT, CALENDAR)
    assert dispatched.deadline_at == friday_17 + timedelta(hours=2)
    suspended = after_step(
        Action.SUSPEND, S.SUSPENDED, friday_17 + timedelta(hours=1), dispatched, URGENT, CALENDAR
    )
    resumed_at = friday_17 + timedelta(days=1)
    resumed = after_step(Action.RESUME, S.ACCEPTED, resumed_at, suspended, URGENT, CALENDAR)
    assert resumed.deadline_at == resumed_at + timedelta(hours=1)


def test_a_report_on_friday_evening_is_due_on_monday_morning():
    friday_evening = datetime(2026, 11, 27, 20, 0, tzinfo=CITY_TIMEZONE)
    clock = after_step(None, S.REPORTED, friday_evening, Clock.stopped(), LIMITS, CALENDAR)
    assert clock.deadline_at == datetime(2026, 11, 30, 9, 30, tzinfo=CITY_TIMEZONE)


def _limit(limit: StageLimit):
    from services.case.domain.calendar import TimeLimit

    return TimeLimit(limit.amount, limit.unit)
