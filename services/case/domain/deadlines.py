"""Stage clocks: which time limit runs after each workflow step, and when it falls due.

Each open case is in one stage with one deadline: register (from report), dispatch (from
registration, or from a unit's return), handle (from dispatch, or from a failed verification) and
verify (from handled). Accepting does not restart the handling clock; suspension pauses it and
resuming grants what was left. Final statuses have no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contract.case import CaseStatus
from services.case.domain.calendar import LimitUnit, TimeLimit, WorkCalendar
from services.case.domain.categories import Stage, StageLimit
from services.case.domain.workflow import FINAL_STATUSES, Action


@dataclass(frozen=True)
class Clock:
    """The clock of a case's current stage (all None for a final case)."""

    stage: Stage | None
    started_at: datetime | None
    deadline_at: datetime | None
    paused_remaining_seconds: float | None = None  # while suspended

    @classmethod
    def stopped(cls) -> Clock:
        return cls(None, None, None, None)


STAGE_ENTERED_BY: dict[Action | None, Stage] = {
    None: Stage.REGISTER,  # a new report
    Action.REGISTER: Stage.DISPATCH,
    Action.RETURN: Stage.DISPATCH,
    Action.DISPATCH: Stage.HANDLE,
    Action.REWORK: Stage.HANDLE,
    Action.HANDLE: Stage.VERIFY,
}


def due(calendar: WorkCalendar, limit: StageLimit, start: datetime) -> datetime:
    return calendar.add(start, TimeLimit(limit.amount, limit.unit))


def remaining_seconds(calendar: WorkCalendar, limit: StageLimit, now: datetime, deadline: datetime) -> float:
    """Time left until the deadline, counted the way the limit counts (working or natural time)."""
    if limit.unit is LimitUnit.NATURAL_HOURS:
        return max(0.0, (deadline - now).total_seconds())
    return calendar.working_seconds_between(now, deadline)


def after_step(
    action: Action | None,
    status: CaseStatus,
    now: datetime,
    current: Clock,
    limits: dict[Stage, StageLimit],
    calendar: WorkCalendar,
) -> Clock:
    """The clock once ``action`` has moved the case to ``status`` (``action`` None: a new report)."""
    if status in FINAL_STATUSES:
        return Clock.stopped()
    if action in STAGE_ENTERED_BY:
        stage = STAGE_ENTERED_BY[action]
        return Clock(stage, now, due(calendar, limits[stage], now))
    if action is Action.SUSPEND and current.stage is not None and current.deadline_at is not None:
        left = remaining_seconds(calendar, limits[current.stage], now, current.deadline_at)
        return Clock(current.stage, current.started_at, None, left)
    if action is Action.RESUME and current.stage is not None and current.paused_remaining_seconds is not None:
        limit = limits[current.stage]
        unit = LimitUnit.NATURAL_HOURS if limit.unit is LimitUnit.NATURAL_HOURS else LimitUnit.WORKING_HOURS
        hours = max(current.paused_remaining_seconds, 1.0) / 3600
        return Clock(current.stage, current.started_at, calendar.add(now, TimeLimit(hours, unit)))
    return current  # accept: the handling clock keeps running
