"""Extension requests: a unit asks for more time to handle a case, the dispatcher approves or denies.

Only the handling stage is extended, and only while the case is being handled (accepted): a
suspended case's clock is already stopped, and other stages belong to the city's own staff. One
request is open per case at a time, and it belongs to the handling round it was asked in: once
the case is verified and sent back for rework, a request still waiting has lapsed (it may be
denied, not approved) and no longer blocks a new one. An approval moves the stage deadline to the requested time, or
to the time the dispatcher grants instead; either must be later than the deadline it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from citygrid.errors import Conflict, InvalidInput
from contract.case import CaseStatus
from services.case.domain.categories import Stage
from services.case.domain.workflow import InvalidTransition, Role, RoleNotAllowed

# The history actions and their events carry exactly these names.
REQUESTED = "extension_requested"
APPROVED = "extension_approved"
DENIED = "extension_denied"

REQUEST_ROLES = frozenset({Role.HANDLER, Role.SUPERVISOR})
DECIDE_ROLES = frozenset({Role.DISPATCHER, Role.SUPERVISOR})
EXTENDABLE = frozenset({CaseStatus.ACCEPTED})
# An extension is more time for a job, not a way to park a case for good.
LONGEST = timedelta(days=90)


class ExtensionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    LAPSED = "lapsed"  # still waiting when its handling round ended


class ExtensionPending(Conflict):
    code = "case.extension_pending"
    title = "Extension already requested"


class ExtensionDecided(Conflict):
    code = "case.extension_decided"
    title = "Extension already decided"


class ExtensionLapsed(Conflict):
    code = "case.extension_lapsed"
    title = "Extension request lapsed"


class InvalidExtensionDeadline(InvalidInput):
    code = "case.invalid_extension_deadline"
    title = "Invalid extension deadline"


@dataclass(frozen=True)
class CaseClock:
    """What the rules need of the case: its status, its running stage and that stage's deadline."""

    status: CaseStatus
    stage: Stage | None
    deadline_at: datetime | None
    round_started_at: datetime | None = None  # when the current handling round began


def has_lapsed(requested_at: datetime, case: CaseClock) -> bool:
    """Asked in an earlier handling round than the case's current one."""
    return case.round_started_at is not None and requested_at < case.round_started_at


def _require_roles(step: str, roles: frozenset[Role], allowed: frozenset[Role]) -> None:
    if roles.isdisjoint(allowed):
        names = sorted(role.value for role in allowed)
        raise RoleNotAllowed(f"{step} needs one of the roles {names}", required_roles=names)


def _require_handling(step: str, case: CaseClock) -> datetime:
    if case.status not in EXTENDABLE or case.stage is not Stage.HANDLE or case.deadline_at is None:
        raise InvalidTransition(
            f"cannot {step} for a case that is {case.status.value}: only a case being handled is extended",
            status_now=case.status.value,
        )
    return case.deadline_at


def _check_deadline(new_deadline: datetime, current: datetime, now: datetime) -> None:
    if new_deadline <= current or new_deadline <= now:
        raise InvalidExtensionDeadline(
            "the new deadline must be later than the current one and than now",
            current_deadline=current.isoformat(),
        )
    if new_deadline - max(current, now) > LONGEST:
        raise InvalidExtensionDeadline(
            f"an extension adds at most {LONGEST.days} days", longest_days=LONGEST.days
        )


def check_request(
    case: CaseClock, roles: frozenset[Role], *, requested: datetime, now: datetime, pending: bool
) -> None:
    """Refuse a request the unit may not make now; otherwise it is recorded as pending."""
    _require_roles("requesting an extension", roles, REQUEST_ROLES)
    current = _require_handling("request an extension", case)
    if pending:
        raise ExtensionPending("an extension request of this case is waiting for the dispatcher")
    _check_deadline(requested, current, now)


def decide(
    case: CaseClock,
    roles: frozenset[Role],
    *,
    status: ExtensionStatus,
    approve: bool,
    requested: datetime,
    granted: datetime | None,
    now: datetime,
    requested_at: datetime | None = None,
) -> datetime | None:
    """The stage's new deadline when approved (None when denied), or why the decision is refused."""
    _require_roles("deciding an extension", roles, DECIDE_ROLES)
    if status is not ExtensionStatus.PENDING:
        raise ExtensionDecided(f"this request was already {status.value}", extension_status=status.value)
    if not approve:
        return None
    current = _require_handling("approve an extension", case)
    if requested_at is not None and has_lapsed(requested_at, case):
        raise ExtensionLapsed("this request was made in an earlier handling round; deny it, or ask again")
    deadline = granted or requested
    _check_deadline(deadline, current, now)
    return deadline
