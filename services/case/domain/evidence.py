"""Evidence photos: which kind may be added at which stage, by whom, and what handling needs.

``before``: the problem as found (whoever reports or checks it); ``check_in``: the handler on site;
``after``: the result of handling, at least one of which must be taken during the current handling
round before the case can be reported handled; ``verification``: what the inspector or the AI
re-check saw when verifying.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from citygrid.errors import Conflict, InvalidInput
from contract.case import CaseStatus
from services.case.domain.workflow import OPEN_STATUSES, InvalidTransition, Role, RoleNotAllowed

MIN_AFTER_PHOTOS = 1
MAX_PER_CASE = 50


class EvidenceKind(StrEnum):
    BEFORE = "before"
    CHECK_IN = "check_in"
    AFTER = "after"
    VERIFICATION = "verification"


@dataclass(frozen=True)
class EvidenceRule:
    statuses: frozenset[CaseStatus]
    roles: frozenset[Role]
    unit_bound: bool  # only the unit the case is dispatched to adds it


S = CaseStatus
R = Role
RULES: dict[EvidenceKind, EvidenceRule] = {
    EvidenceKind.BEFORE: EvidenceRule(
        OPEN_STATUSES, frozenset({R.INSPECTOR, R.OPERATOR, R.HANDLER, R.SUPERVISOR, R.SYSTEM}), False
    ),
    EvidenceKind.CHECK_IN: EvidenceRule(
        frozenset({S.DISPATCHED, S.ACCEPTED}), frozenset({R.HANDLER, R.SUPERVISOR}), True
    ),
    EvidenceKind.AFTER: EvidenceRule(frozenset({S.ACCEPTED}), frozenset({R.HANDLER, R.SUPERVISOR}), True),
    EvidenceKind.VERIFICATION: EvidenceRule(
        frozenset({S.HANDLED}), frozenset({R.INSPECTOR, R.SUPERVISOR, R.SYSTEM}), False
    ),
}


class AfterPhotoRequired(InvalidInput):
    code = "case.after_photo_required"
    title = "After-photo required"


class TooMuchEvidence(Conflict):
    code = "evidence.too_many"
    title = "Too many photos"


class ContentTypeMismatch(InvalidInput):
    code = "evidence.content_type_mismatch"
    title = "Content type does not match the image"


def _check(rule: EvidenceRule, doing: str, status: CaseStatus, roles: frozenset[Role]) -> None:
    if status not in rule.statuses:
        raise InvalidTransition(
            f"cannot {doing} a case that is {status.value}",
            status_now=status.value,
            allowed_statuses=sorted(s.value for s in rule.statuses),
        )
    if roles.isdisjoint(rule.roles):
        names = sorted(r.value for r in rule.roles)
        raise RoleNotAllowed(f"to {doing} a case needs one of the roles {names}", required_roles=names)


def check_upload(kind: EvidenceKind, status: CaseStatus, roles: frozenset[Role], count: int) -> None:
    """Refuse a photo of this kind now, by these roles, or beyond the case's allowance."""
    _check(RULES[kind], f"add a {kind.value} photo to", status, roles)
    if count >= MAX_PER_CASE:
        raise TooMuchEvidence(f"a case keeps at most {MAX_PER_CASE} photos", limit=MAX_PER_CASE)


def check_check_in(status: CaseStatus, roles: frozenset[Role]) -> None:
    """A handler checks in on site while the case is dispatched to the unit or being handled."""
    _check(RULES[EvidenceKind.CHECK_IN], "check in on", status, roles)


def check_declared_type(declared: str, actual: str) -> None:
    if declared != actual:
        raise ContentTypeMismatch(f"the body was sent as {declared} but is {actual}", actual=actual)


def require_after_photos(count: int) -> None:
    if count < MIN_AFTER_PHOTOS:
        raise AfterPhotoRequired(
            "upload at least one after-photo of the result (evidence kind 'after') before handling",
            required=MIN_AFTER_PHOTOS,
        )
