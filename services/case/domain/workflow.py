"""The case workflow as a state machine, with the roles allowed to take each step.

report → register | reject | merge (duplicate) → dispatch → the unit accepts, or returns it to the
dispatcher → handling (suspend/resume) → handled → verify: pass → closed, fail → rework (the unit
handles again) → … A supervisor may cancel a case at any open stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from citygrid.errors import Conflict, Forbidden
from contract.case import CaseStatus


class Role(StrEnum):
    INSPECTOR = "inspector"  # 监督员
    OPERATOR = "operator"  # 受理员
    DISPATCHER = "dispatcher"  # 派遣员
    HANDLER = "handler"  # a unit's handler
    SUPERVISOR = "supervisor"  # 值班长
    SYSTEM = "system"  # the platform itself: automatic intake, dispatch rules, AI re-check


class Action(StrEnum):
    REGISTER = "register"
    REJECT = "reject"
    MERGE = "merge"  # a duplicate of an open case
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    RETURN = "return"  # "not ours": back to the dispatcher with a reason
    SUSPEND = "suspend"
    RESUME = "resume"
    HANDLE = "handle"
    CLOSE = "close"  # verification passed
    REWORK = "rework"  # verification failed
    CANCEL = "cancel"


@dataclass(frozen=True)
class Step:
    sources: frozenset[CaseStatus]
    target: CaseStatus
    roles: frozenset[Role]


def _step(sources: set[CaseStatus], target: CaseStatus, roles: set[Role]) -> Step:
    return Step(frozenset(sources), target, frozenset(roles | {Role.SUPERVISOR}))


S = CaseStatus
OPEN_STATUSES = frozenset({S.REPORTED, S.REGISTERED, S.DISPATCHED, S.ACCEPTED, S.SUSPENDED, S.HANDLED})
FINAL_STATUSES = frozenset(set(CaseStatus) - OPEN_STATUSES)

STEPS: dict[Action, Step] = {
    Action.REGISTER: _step({S.REPORTED}, S.REGISTERED, {Role.OPERATOR, Role.SYSTEM}),
    Action.REJECT: _step({S.REPORTED}, S.REJECTED, {Role.OPERATOR}),
    Action.MERGE: _step({S.REPORTED}, S.MERGED, {Role.OPERATOR, Role.SYSTEM}),
    Action.DISPATCH: _step({S.REGISTERED}, S.DISPATCHED, {Role.DISPATCHER, Role.SYSTEM}),
    Action.ACCEPT: _step({S.DISPATCHED}, S.ACCEPTED, {Role.HANDLER}),
    Action.RETURN: _step({S.DISPATCHED}, S.REGISTERED, {Role.HANDLER}),
    Action.SUSPEND: _step({S.ACCEPTED}, S.SUSPENDED, {Role.DISPATCHER}),
    Action.RESUME: _step({S.SUSPENDED}, S.ACCEPTED, {Role.DISPATCHER}),
    Action.HANDLE: _step({S.ACCEPTED}, S.HANDLED, {Role.HANDLER}),
    Action.CLOSE: _step({S.HANDLED}, S.CLOSED, {Role.INSPECTOR, Role.SYSTEM}),
    Action.REWORK: _step({S.HANDLED}, S.ACCEPTED, {Role.INSPECTOR, Role.SYSTEM}),
    Action.CANCEL: _step(set(OPEN_STATUSES), S.CANCELLED, set()),
}

# Steps whose reason the record must carry.
NEEDS_NOTE = frozenset({Action.REJECT, Action.RETURN, Action.SUSPEND, Action.REWORK, Action.CANCEL})


class InvalidTransition(Conflict):
    code = "case.invalid_transition"
    title = "Invalid transition"


class RoleNotAllowed(Forbidden):
    code = "case.role_not_allowed"
    title = "Role not allowed"


def allowed_actions(status: CaseStatus) -> list[Action]:
    return [action for action, step in STEPS.items() if status in step.sources]


def next_status(status: CaseStatus, action: Action, roles: frozenset[str]) -> CaseStatus:
    """The status after ``action``, or the reason it may not be taken now by these roles."""
    step = STEPS[action]
    if status not in step.sources:
        raise InvalidTransition(
            f"cannot {action.value} a case that is {status.value}",
            status_now=status.value,
            allowed_actions=[a.value for a in allowed_actions(status)],
        )
    if roles.isdisjoint(step.roles):
        raise RoleNotAllowed(
            f"{action.value} needs one of the roles {sorted(r.value for r in step.roles)}",
            required_roles=sorted(r.value for r in step.roles),
        )
    return step.target
