"""Extension requests as a specification: who asks, who decides, when, and what the deadline becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contract.case import CaseStatus
from services.case.domain.categories import Stage
from services.case.domain.extensions import (
    DECIDE_ROLES,
    REQUEST_ROLES,
    CaseClock,
    ExtensionDecided,
    ExtensionLapsed,
    ExtensionPending,
    ExtensionStatus,
    InvalidExtensionDeadline,
    check_request,
    decide,
    has_lapsed,
)
from services.case.domain.workflow import InvalidTransition, Role, RoleNotAllowed

NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
DEADLINE = NOW + timedelta(hours=4)
HANDLING = CaseClock(CaseStatus.ACCEPTED, Stage.HANDLE, DEADLINE)
HANDLER = frozenset({Role.HANDLER})
DISPATCHER = frozenset({Role.DISPATCHER})
LATER = DEADLINE + timedelta(days=1)


def request(case: CaseClock = HANDLING, roles: frozenset[Role] = HANDLER, **changes: object) -> None:
    arguments: dict[str, object] = {"requested": LATER, "now": NOW, "pending": False} | changes
    check_request(case, roles, **arguments)  # type: ignore[arg-type]


def test_a_unit_handling_a_case_may_ask_for_a_later_deadline():
    request()


def test_the_unit_s_handler_and_the_supervisor_ask_the_dispatcher_and_the_supervisor_decide():
    assert REQUEST_ROLES == {Role.HANDLER, Role.SUPERVISOR}
    assert DECIDE_ROLES == {Role.DISPATCHER, Role.SUPERVISOR}


@pytest.mark.parametrize("role", sorted(set(Role) - REQUEST_ROLES))
def test_no_other_role_may_ask_for_more_time(role):
    with pytest.raises(RoleNotAllowed):
        request(roles=frozenset({role}))


@pytest.mark.parametrize("role", sorted(set(Role) - DECIDE_ROLES))
def test_no_other_role_may_decide(role):
    with pytest.raises(RoleNotAllowed):
        decide(
            HANDLING,
            frozenset({role}),
            status=ExtensionStatus.PENDING,
            approve=True,
            requested=LATER,
            granted=None,
            now=NOW,
        )


@pytest.mark.parametrize("status", sorted(set(CaseStatus) - {CaseStatus.ACCEPTED}))
def test_only_a_case_being_handled_is_extended(status):
    with pytest.raises(InvalidTransition) as refused:
        request(case=CaseClock(status, Stage.HANDLE, DEADLINE))
    assert refused.value.code == "case.invalid_transition"


def test_a_suspended_clock_or_another_stage_is_not_extended():
    with pytest.raises(InvalidTransition):
        request(case=CaseClock(CaseStatus.ACCEPTED, Stage.HANDLE, None))
    with pytest.raises(InvalidTransition):
        request(case=CaseClock(CaseStatus.ACCEPTED, Stage.VERIFY, DEADLINE))


def test_one_request_waits_at_a_time():
    with pytest.raises(ExtensionPending) as refused:
        request(pending=True)
    assert refused.value.status == 409


@pytest.mark.parametrize(
    "requested",
    [DEADLINE, DEADLINE - timedelta(minutes=1), NOW - timedelta(hours=1), DEADLINE + timedelta(days=91)],
    ids=["the-same", "earlier", "in-the-past", "over-90-days"],
)
def test_the_new_deadline_is_later_than_the_current_one_and_within_90_days(requested):
    with pytest.raises(InvalidExtensionDeadline) as refused:
        request(requested=requested)
    assert refused.value.status == 422


def test_an_overdue_case_may_ask_for_a_deadline_after_now():
    overdue = CaseClock(CaseStatus.ACCEPTED, Stage.HANDLE, NOW - timedelta(hours=2))
    request(case=overdue, requested=NOW + timedelta(hours=1))


def test_an_approval_moves_the_deadline_to_the_one_requested_or_to_the_one_granted():
    common = {"status": ExtensionStatus.PENDING, "approve": True, "requested": LATER, "now": NOW}
    assert decide(HANDLING, DISPATCHER, granted=None, **common) == LATER  # type: ignore[arg-type]
    sooner = DEADLINE + timedelta(hours=2)
    assert decide(HANDLING, DISPATCHER, granted=sooner, **common) == sooner  # type: ignore[arg-type]
    with pytest.raises(InvalidExtensionDeadline):
        decide(HANDLING, DISPATCHER, granted=DEADLINE, **common)  # type: ignore[arg-type]


def test_a_denial_keeps_the_deadline_even_when_the_case_has_moved_on():
    handled = CaseClock(CaseStatus.HANDLED, Stage.VERIFY, DEADLINE)
    assert (
        decide(
            handled,
            DISPATCHER,
            status=ExtensionStatus.PENDING,
            approve=False,
            requested=LATER,
            granted=None,
            now=NOW,
        )
        is None
    )
    with pytest.raises(InvalidTransition):
        decide(
            handled,
            DISPATCHER,
            status=ExtensionStatus.PENDING,
            approve=True,
            requested=LATER,
            granted=None,
            now=NOW,
        )


@pytest.mark.parametrize("status", [ExtensionStatus.APPROVED, ExtensionStatus.DENIED])
@pytest.mark.parametrize("approve", [True, False])
def test_a_request_is_decided_once(status, approve):
    with pytest.raises(ExtensionDecided):
        decide(HANDLING, DISPATCHER, status=status, approve=approve, requested=LATER, granted=None, now=NOW)


def test_a_request_from_an_earlier_handling_round_has_lapsed_and_is_not_approved():
    reworked = CaseClock(CaseStatus.ACCEPTED, Stage.HANDLE, DEADLINE, round_started_at=NOW)
    asked_before = NOW - timedelta(hours=1)
    assert has_lapsed(asked_before, reworked)
    assert not has_lapsed(NOW, reworked)
    assert not has_lapsed(asked_before, HANDLING)  # no round known: nothing lapses
    common = {"status": ExtensionStatus.PENDING, "requested": LATER, "granted": None, "now": NOW}
    with pytest.raises(ExtensionLapsed) as refused:
        decide(reworked, DISPATCHER, approve=True, requested_at=asked_before, **common)  # type: ignore[arg-type]
    assert refused.value.status == 409
    assert decide(reworked, DISPATCHER, approve=False, requested_at=asked_before, **common) is None  # type: ignore[arg-type]
    assert decide(reworked, DISPATCHER, approve=True, requested_at=NOW, **common) == LATER  # type: ignore[arg-type]
