"""The case workflow as a specification: which step leads where, from where, and for whom."""

from __future__ import annotations

import pytest

from contract.case import CaseStatus
from services.case.domain.workflow import (
    OPEN_STATUSES,
    STEPS,
    Action,
    InvalidTransition,
    Role,
    RoleNotAllowed,
    allowed_actions,
    next_status,
)

EVERYONE = frozenset(Role)
SUPERVISOR = frozenset({Role.SUPERVISOR})

REFUSED_PAIRS = [
    (status, action) for status in CaseStatus for action in Action if STEPS[action].source != status
]
ROLE_REFUSALS = [(action, role) for action, step in STEPS.items() for role in Role if role not in step.roles]


# --- the map of the workflow ------------------------------------------------------------------


def test_the_workflow_is_report_register_or_reject_dispatch_handle_then_close_or_rework():
    assert {action: (step.source, step.target) for action, step in STEPS.items()} == {
        Action.REGISTER: (CaseStatus.REPORTED, CaseStatus.REGISTERED),
        Action.REJECT: (CaseStatus.REPORTED, CaseStatus.REJECTED),
        Action.DISPATCH: (CaseStatus.REGISTERED, CaseStatus.DISPATCHED),
        Action.HANDLE: (CaseStatus.DISPATCHED, CaseStatus.HANDLED),
        Action.CLOSE: (CaseStatus.HANDLED, CaseStatus.CLOSED),
        Action.REWORK: (CaseStatus.HANDLED, CaseStatus.DISPATCHED),
    }


def test_each_step_is_reserved_to_its_working_role_and_the_supervisor():
    assert {action: step.roles for action, step in STEPS.items()} == {
        Action.REGISTER: {Role.OPERATOR, Role.SUPERVISOR},
        Action.REJECT: {Role.OPERATOR, Role.SUPERVISOR},
        Action.DISPATCH: {Role.DISPATCHER, Role.SUPERVISOR},
        Action.HANDLE: {Role.HANDLER, Role.SUPERVISOR},
        Action.CLOSE: {Role.INSPECTOR, Role.SUPERVISOR},
        Action.REWORK: {Role.INSPECTOR, Role.SUPERVISOR},
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CaseStatus.REPORTED, [Action.REGISTER, Action.REJECT]),
        (CaseStatus.REGISTERED, [Action.DISPATCH]),
        (CaseStatus.DISPATCHED, [Action.HANDLE]),
        (CaseStatus.HANDLED, [Action.CLOSE, Action.REWORK]),
        (CaseStatus.REJECTED, []),
        (CaseStatus.CLOSED, []),
    ],
)
def test_allowed_actions_lists_the_steps_that_leave_a_status(status, expected):
    assert allowed_actions(status) == expected


def test_rejected_and_closed_cases_are_final_and_every_other_status_is_open():
    assert {status for status in CaseStatus if allowed_actions(status)} == OPEN_STATUSES
    assert set(CaseStatus) - OPEN_STATUSES == {CaseStatus.REJECTED, CaseStatus.CLOSED}


# --- allowed transitions ----------------------------------------------------------------------


@pytest.mark.parametrize(("action", "step"), list(STEPS.items()), ids=[a.value for a in STEPS])
def test_each_allowed_step_leads_to_its_target_for_each_of_its_roles(action, step):
    for role in step.roles:
        assert next_status(step.source, action, frozenset({role})) == step.target


@pytest.mark.parametrize(("action", "step"), list(STEPS.items()), ids=[a.value for a in STEPS])
def test_a_supervisor_may_take_every_step(action, step):
    assert next_status(step.source, action, SUPERVISOR) == step.target


@pytest.mark.parametrize(("action", "step"), list(STEPS.items()), ids=[a.value for a in STEPS])
def test_roles_given_as_plain_strings_from_a_token_are_understood(action, step):
    roles = frozenset(str(role.value) for role in step.roles)
    assert next_status(step.source, action, roles) == step.target


def test_a_handled_case_that_passes_verification_is_closed():
    assert next_status(CaseStatus.HANDLED, Action.CLOSE, frozenset({Role.INSPECTOR})) == CaseStatus.CLOSED


def test_a_handled_case_that_fails_verification_goes_back_to_dispatched():
    assert (
        next_status(CaseStatus.HANDLED, Action.REWORK, frozenset({Role.INSPECTOR})) == CaseStatus.DISPATCHED
    )


def test_a_reported_case_can_be_rejected_by_an_operator():
    assert next_status(CaseStatus.REPORTED, Action.REJECT, frozenset({Role.OPERATOR})) == CaseStatus.REJECTED


def test_a_case_can_be_reworked_and_handled_again_until_it_passes_verification():
    status = CaseStatus.REPORTED
    for action in (
        Action.REGISTER,
        Action.DISPATCH,
        Action.HANDLE,
        Action.REWORK,
        Action.HANDLE,
        Action.REWORK,
        Action.HANDLE,
        Action.CLOSE,
    ):
        status = next_status(status, action, SUPERVISOR)
    assert status == CaseStatus.CLOSED


def test_one_of_several_roles_is_enough():
    roles = frozenset({"reporter", Role.HANDLER.value})
    assert next_status(CaseStatus.DISPATCHED, Action.HANDLE, roles) == CaseStatus.HANDLED


# --- refused transitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "action"), REFUSED_PAIRS, ids=[f"{s.value}-{a.value}" for s, a in REFUSED_PAIRS]
)
def test_an_action_not_allowed_from_a_status_is_an_invalid_transition_naming_the_allowed_ones(status, action):
    with pytest.raises(InvalidTransition) as raised:
        next_status(status, action, EVERYONE)

    error = raised.value
    assert error.code == "case.invalid_transition"
    assert error.status == 409
    assert error.extra["status_now"] == status.value
    assert error.extra["allowed_actions"] == [a.value for a in allowed_actions(status)]
    assert action.value in error.detail
    assert status.value in error.detail


def test_every_status_and_action_pair_is_either_a_step_or_refused():
    steps = {(step.source, action) for action, step in STEPS.items()}
    assert len(steps) + len(REFUSED_PAIRS) == len(CaseStatus) * len(Action)


@pytest.mark.parametrize("action", list(Action), ids=[a.value for a in Action])
def test_nothing_can_be_done_to_a_closed_case_even_by_a_supervisor(action):
    with pytest.raises(InvalidTransition) as raised:
        next_status(CaseStatus.CLOSED, action, SUPERVISOR)
    assert raised.value.extra["allowed_actions"] == []


@pytest.mark.parametrize("action", list(Action), ids=[a.value for a in Action])
def test_nothing_can_be_done_to_a_rejected_case_even_by_a_supervisor(action):
    with pytest.raises(InvalidTransition) as raised:
        next_status(CaseStatus.REJECTED, action, SUPERVISOR)
    assert raised.value.extra["allowed_actions"] == []


def test_a_wrong_status_is_reported_before_a_missing_role():
    with pytest.raises(InvalidTransition):
        next_status(CaseStatus.CLOSED, Action.HANDLE, frozenset())


# --- role refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "role"), ROLE_REFUSALS, ids=[f"{a.value}-by-{r.value}" for a, r in ROLE_REFUSALS]
)
def test_a_role_without_the_step_is_refused_naming_the_roles_that_have_it(action, role):
    step = STEPS[action]
    with pytest.raises(RoleNotAllowed) as raised:
        next_status(step.source, action, frozenset({role}))

    error = raised.value
    assert error.code == "case.role_not_allowed"
    assert error.status == 403
    assert error.extra["required_roles"] == sorted(r.value for r in step.roles)


@pytest.mark.parametrize("action", list(Action), ids=[a.value for a in Action])
def test_a_caller_with_no_roles_may_take_no_step(action):
    step = STEPS[action]
    with pytest.raises(RoleNotAllowed):
        next_status(step.source, action, frozenset())


@pytest.mark.parametrize("action", list(Action), ids=[a.value for a in Action])
def test_unknown_roles_grant_nothing(action):
    step = STEPS[action]
    with pytest.raises(RoleNotAllowed):
        next_status(step.source, action, frozenset({"admin", "Supervisor", "root"}))


def test_an_inspector_may_not_handle_the_case_they_will_verify():
    with pytest.raises(RoleNotAllowed) as raised:
        next_status(CaseStatus.DISPATCHED, Action.HANDLE, frozenset({Role.INSPECTOR}))
    assert raised.value.extra["required_roles"] == ["handler", "supervisor"]
