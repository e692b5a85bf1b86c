"""Evidence photos as a specification: which kind, at which stage, by whom; and what handling needs."""

from __future__ import annotations

import pytest

from contract.case import CaseStatus
from services.case.domain.evidence import (
    MAX_PER_CASE,
    RULES,
    AfterPhotoRequired,
    ContentTypeMismatch,
    EvidenceKind,
    TooMuchEvidence,
    check_check_in,
    check_declared_type,
    check_upload,
    require_after_photos,
)
from services.case.domain.workflow import OPEN_STATUSES, InvalidTransition, Role, RoleNotAllowed

S = CaseStatus
R = Role


def test_the_evidence_map():
    assert {kind: (set(rule.statuses), set(rule.roles), rule.unit_bound) for kind, rule in RULES.items()} == {
        EvidenceKind.BEFORE: (
            set(OPEN_STATUSES),
            {R.INSPECTOR, R.OPERATOR, R.HANDLER, R.SUPERVISOR, R.SYSTEM},
            False,
        ),
        EvidenceKind.CHECK_IN: ({S.DISPATCHED, S.ACCEPTED}, {R.HANDLER, R.SUPERVISOR}, True),
        EvidenceKind.AFTER: ({S.ACCEPTED}, {R.HANDLER, R.SUPERVISOR}, True),
        EvidenceKind.VERIFICATION: ({S.HANDLED}, {R.INSPECTOR, R.SUPERVISOR, R.SYSTEM}, False),
    }


@pytest.mark.parametrize(
    ("kind", "status"),
    [(kind, status) for kind, rule in RULES.items() for status in S if status not in rule.statuses],
)
def test_a_photo_is_refused_at_a_stage_it_does_not_belong_to(kind, status):
    with pytest.raises(InvalidTransition):
        check_upload(kind, status, frozenset({R.SUPERVISOR}), 0)


@pytest.mark.parametrize(
    ("kind", "role"), [(kind, role) for kind, rule in RULES.items() for role in R if role not in rule.roles]
)
def test_a_photo_is_refused_from_a_role_it_does_not_belong_to(kind, role):
    status = next(iter(RULES[kind].statuses))
    with pytest.raises(RoleNotAllowed):
        check_upload(kind, status, frozenset({role}), 0)


def test_a_case_keeps_a_bounded_number_of_photos():
    check_upload(EvidenceKind.AFTER, S.ACCEPTED, frozenset({R.HANDLER}), MAX_PER_CASE - 1)
    with pytest.raises(TooMuchEvidence):
        check_upload(EvidenceKind.AFTER, S.ACCEPTED, frozenset({R.HANDLER}), MAX_PER_CASE)


def test_a_handler_checks_in_while_the_case_is_dispatched_or_in_hand():
    check_check_in(S.DISPATCHED, frozenset({R.HANDLER}))
    check_check_in(S.ACCEPTED, frozenset({R.HANDLER}))
    with pytest.raises(InvalidTransition):
        check_check_in(S.HANDLED, frozenset({R.HANDLER}))
    with pytest.raises(RoleNotAllowed):
        check_check_in(S.ACCEPTED, frozenset({R.INSPECTOR}))


def test_the_declared_content_type_must_be_what_the_bytes_are():
    check_declared_type("image/png", "image/png")
    with pytest.raises(ContentTypeMismatch):
        check_declared_type("image/png", "image/jpeg")


def test_handling_needs_at_least_one_after_photo():
    require_after_photos(1)
    with pytest.raises(AfterPhotoRequired) as refused:
        require_after_photos(0)
    assert refused.value.code == "case.after_photo_required"
    assert refused.value.status == 422
