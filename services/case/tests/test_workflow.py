"""The case workflow as a specification: which step leads where, from where, and for whom."""

from __future__ import annotations

import pytest

from contract.case import CaseStatus
from services.case.domain.workflow import (
    FINAL_STATUSES,
    NEEDS_NOTE,
    OPEN_STATUSES,
    STEPS,
    Action,
    InvalidTransition,
    Role,
    RoleNotAllowed,
    allowed_actions,
    next_status,
)

S = CaseStatus
SUPERVISOR = frozenset({Role.SUPERVISOR})
REFUSED_PAIRS = [(status, action) for status in S for action in Action if status not in STEPS[action].sources]
ROLE_REFUSALS = [(action, role) for action, step in STEPS.items() for role in Role if role not in step.roles]


def test_the_workflow_map():
    assert {action: (set(step.sources), step.target) for action, step in STEPS.items()} == {
        Action.REGISTER: ({S.REPORTED}, S.REGISTERED),
        Action.REJECT: ({S.REPORTED}, S.REJECTED),
        Action.MERGE: ({S.REPORTED}, S.MERGED),
        Action.DISPATCH: ({S.REGISTERED}, S.DISPATCHED),
        Action.ACCEPT: ({S.DISPATCHED}, S.ACCEPTED),
        Action.RETURN: ({S.DISPATCHED}, S.REGISTERED),
        Action.SUSPEND: ({S.ACCEPTED}, S.SUSPENDED),
        Action.RESUME: ({S.SUSPENDED}, S.ACCEPTED),
        Action.HANDLE: ({S.ACCEPTED}, S.HANDLED),
        Action.CLOSE: ({S.HANDLED}, S.CLOSED),
        Action.REWORK: ({S.HANDLED}, S.ACCEPTED),
        Action.CANCEL: (set(OPEN_STATUSES), S.CANCELLED),
    }


def test_each_step_is_reserved_to_its_working_roles_and_the_supervisor():
    assert {action: set(step.roles) for action, step in STEPS.items()} == {
        Action.REGISTER: {Role.OPERATOR, Role.SYSTEM, Role.SUPERVISOR},
        Action.REJECT: {Role.OPERATOR, Role.SUPERVISOR},
        Action.MERGE: {Role.OPERATOR, Role.SYSTEM, Role.SUPERVISOR},
        Action.DISPATCH: {Role.DISPATCHER, Role.SYSTEM, Role.SUPERVISOR},
        Action.ACCEPT: {Role.HANDLER, Role.SUPERVISOR},
        Action.RETURN: {Role.HANDLER, Role.SUPERVISOR},
        Action.SUSPEND: {Role.DISPATCHER, Role.SUPERVISOR},
        Action.RESUME: {Role.DISPATCHER, Role.SUPERVISOR},
        Action.HANDLE: {Role.HANDLER, Role.SUPERVISOR},
        Action.CLOSE: {Role.INSPECTOR, Role.SYSTEM, Role.SUPERVISOR},
        Action.REWORK: {Role.INSPECTOR, Role.SYSTEM, Role.SUPERVISOR},
        Action.CANCEL: {Role.SUPERVISOR},
    }


def test_final_statuses_are_rejected_merged_closed_and_cancelled():
    assert FINAL_STATUSES == {S.REJECTED, S.MERGED, S.CLOSED, S.CANCELLED}
    assert OPEN_STATUSES | FINAL_STATUSES == set(S)


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_nothing_can_be_done_to_a_final_case_even_by_a_supervisor(status):
    assert allowed_actions(status) == []
    for action in Action:
        with pytest.raises(InvalidTransition):
            next_status(status, action, SUPERVISOR)


@pytest.mark.parametrize("status", sorted(OPEN_STATUSES))
def test_a_supervisor_may_cancel_a_case_at_any_open_stage(status):
    assert next_status(status, Action.CANCEL, SUPERVISOR) is S.CANCELLED
    assert Action.CANCEL in allowed_actions(status)


@pytest.mark.parametrize(("action", "step"), STEPS.items())
def test_each_allowed_step_leads_to_its_target_for_each_of_its_roles(action, step):
    for source in step.sources:
        for role in step.roles:
            assert next_status(source, action, frozenset({role})) is step.target
            assert (
                next_status(source, action, frozenset({role.value})) is step.target
            )  # as a token carries it


@pytest.mark.parametrize(("status", "action"), REFUSED_PAIRS)
def test_an_action_not_allowed_from_a_status_is_an_invalid_transition_naming_the_allowed_ones(status, action):
    with pytest.raises(InvalidTransition) as refused:
        next_status(status, action, frozenset(Role))
    assert refused.value.status == 409
    assert refused.value.code == "case.invalid_transition"
    assert refused.value.extra["allowed_actions"] == [a.value for a in allowed_actions(status)]


@pytest.mark.parametrize(("action", "role"), ROLE_REFUSALS)
def test_a_role_without_the_step_is_refused_naming_the_roles_that_have_it(action, role):
    source = sorted(STEPS[action].sources)[0]
    with pytest.raises(RoleNotAllowed) as refused:
        next_status(source, action, frozenset({role}))
    assert refused.value.status == 403
    assert refused.value.extra["required_roles"] == sorted(r.value for r in STEPS[action].roles)


def test_a_wrong_status_is_reported_before_a_missing_role():
    with pytest.raises(InvalidTransition):
        next_status(S.CLOSED, Action.HANDLE, frozenset())


@pytest.mark.parametrize("roles", [frozenset(), frozenset({"mayor", "citizen"})])
def test_no_roles_or_unknown_roles_grant_nothing(roles):
    with pytest.raises(RoleNotAllowed):
        next_status(S.REPORTED, Action.REGISTER, roles)


def test_a_unit_that_returns_a_case_sends_it_back_to_the_dispatcher_queue():
    assert next_status(S.DISPATCHED, Action.RETURN, frozenset({Role.HANDLER})) is S.REGISTERED
    assert allowed_actions(S.REGISTERED) == [Action.DISPATCH, Action.CANCEL]


def test_a_failed_verification_sends_the_case_back_to_the_unit_that_accepted_it():
    assert next_status(S.HANDLED, Action.REWORK, frozenset({Role.INSPECTOR})) is S.ACCEPTED
    assert next_status(S.ACCEPTED, Action.HANDLE, frozenset({Role.HANDLER})) is S.HANDLED


def test_the_platform_may_register_dispatch_and_verify_but_not_handle():
    system = frozenset({Role.SYSTEM})
    status = next_status(S.REPORTED, Action.REGISTER, system)
    status = next_status(status, Action.DISPATCH, system)
    with pytest.raises(RoleNotAllowed):
        next_status(status, Action.ACCEPT, system)
    assert next_status(S.HANDLED, Action.CLOSE, system) is S.CLOSED


def test_a_full_path_with_return_suspension_and_rework_ends_closed():
    path = [
        (Action.REGISTER, Role.OPERATOR), (Action.DISPATCH, Role.DISPATCHER), (Action.RETURN, Role.HANDLER),
        (Action.DISPATCH, Role.DISPATCHER), (Action.ACCEPT, Role.HANDLER), (Action.SUSPEND, Role.DISPATCHER),
        (Action.RESUME, Role.DISPATCHER), (Action.HANDLE, Role.HANDLER), (Action.REWORK, Role.INSPECTOR),
        (Action.HANDLE, Role.HANDLER), (Action.CLOSE, Role.INSPECTOR),
    ]  # fmt: skip
    status = S.REPORTED
    for action, role in path:
        status = next_status(status, action, frozenset({role}))
    assert status is S.CLOSED


def test_steps_that_change_course_need_a_reason():
    assert NEEDS_NOTE == {Action.REJECT, Action.RETURN, Action.SUSPEND, Action.REWORK, Action.CANCEL}


def test_an_inspector_may_not_handle_the_case_they_will_verify():
    with pytest.raises(RoleNotAllowed):
        next_status(S.ACCEPTED, Action.HANDLE, frozenset({Role.INSPECTOR}))
