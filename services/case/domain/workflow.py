"""The case workflow as a state machine, with the roles allowed to take each step.

report → register | reject → dispatch → handle → verify: pass → closed, fail → back to dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from citygrid.errors import Conflict, Forbidden
from contract.case import CaseStatus


class Role(StrEnum):
    INSPECTOR = "inspector"
    OPERATOR = "operator"
    DISPATCHER = "dispatcher"
    HANDLER = "handler"
    SUPERVISOR = "supervisor"


class Action(StrEnum):
    REGISTER = "register"
    REJECT = "reject"
    DISPATCH = "dispatch"
    HANDLE = "handle"
    CLOSE = "close"  # verification passed
    REWORK = "rework"  # verification failed


@dataclass(frozen=True)
class Step:
    source: CaseStatus
    target: CaseStatus
    roles: frozenset[Role]


STEPS: dict[Action, Step] = {
    Action.REGISTER: Step(
        CaseStatus.REPORTED, CaseStatus.REGISTERED, frozenset({Role.OPERATOR, Role.SUPERVISOR})
    ),
    Action.REJECT: Step(
        CaseStatus.REPORTED, CaseStatus.REJECTED, frozenset({Role.OPERATOR, Role.SUPERVISOR})
    ),
    Action.DISPATCH: Step(
        CaseStatus.REGISTERED, CaseStatus.DISPATCHED, frozenset({Role.DISPATCHER, Role.SUPERVISOR})
    ),
    Action.HANDLE: Step(
        CaseStatus.DISPATCHED, CaseStatus.HANDLED, frozenset({Role.HANDLER, Role.SUPERVISOR})
    ),
    Action.CLOSE: Step(CaseStatus.HANDLED, CaseStatus.CLOSED, frozenset({Role.INSPECTOR, Role.SUPERVISOR})),
    Action.REWORK: Step(
        CaseStatus.HANDLED, CaseStatus.DISPATCHED, frozenset({Role.INSPECTOR, Role.SUPERVISOR})
    ),
}

OPEN_STATUSES = frozenset(
    {CaseStatus.REPORTED, CaseStatus.REGISTERED, CaseStatus.DISPATCHED, CaseStatus.HANDLED}
)


class InvalidTransition(Conflict):
    code = "case.invalid_transition"
    title = "Invalid transition"


class RoleNotAllowed(Forbidden):
    code = "case.role_not_allowed"
    title = "Role not allowed"


def allowed_actions(status: CaseStatus) -> list[Action]:
    return [action for action, step in STEPS.items() if step.source == status]


def next_status(status: CaseStatus, action: Action, roles: frozenset[str]) -> CaseStatus:
    """The status after ``action``, or the reason it may not be taken now by these roles."""
    step = STEPS[action]
    if step.source != status:
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
