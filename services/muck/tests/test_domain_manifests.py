"""The electronic manifest: each action's status, recorded fields and events, and what it refuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from citygrid.errors import Conflict
from services.muck.domain.manifests import (
    AbnormalReason,
    InvalidManifestTransition,
    Manifest,
    ManifestAction,
    ManifestCancelled,
    ManifestClosed,
    ManifestConfirmed,
    ManifestDelivered,
    ManifestDeparted,
    ManifestFlagged,
    ManifestLoaded,
    ManifestResolved,
    ManifestStatus,
    allowed_actions,
    apply,
    closure_rate,
    is_open,
    is_overdue,
)
from services.muck.domain.windows import CITY_TZ

S = ManifestStatus
A = ManifestAction
R = AbnormalReason

AT = datetime(2026, 12, 1, 21, 0, tzinfo=CITY_TZ)
WINDOW_END = datetime(2026, 12, 1, 23, 30, tzinfo=CITY_TZ)


def manifest(status: ManifestStatus = S.ISSUED, declared: float = 20.0) -> Manifest:
    return Manifest(
        status=status,
        declared_quantity_m3=declared,
        received_quantity_m3=None,
        window_end=WINDOW_END,
        origin_site="GZ-TH-0001",
        disposal_site="GZ-BY-D001",
        abnormal_reason=None,
    )


# The transitions as the domain states them, written out rather than read from the module, so a
# wrong entry in its table fails here.
LEGAL: dict[tuple[ManifestStatus, ManifestAction], ManifestStatus] = {
    (S.ISSUED, A.LOAD): S.LOADED,
    (S.LOADED, A.DEPART): S.IN_TRANSIT,
    (S.IN_TRANSIT, A.DELIVER): S.DELIVERED,
    (S.LOADED, A.DELIVER): S.DELIVERED,
    (S.CONFIRMED, A.CLOSE): S.CLOSED,
    (S.ISSUED, A.FLAG): S.ABNORMAL,
    (S.LOADED, A.FLAG): S.ABNORMAL,
    (S.IN_TRANSIT, A.FLAG): S.ABNORMAL,
    (S.DELIVERED, A.FLAG): S.ABNORMAL,
    (S.ABNORMAL, A.RESOLVE): S.CLOSED,
    (S.ISSUED, A.CANCEL): S.CANCELLED,
}
# Confirm is legal from delivered only; its target depends on the quantity (tested on its own).
LEGAL_SOURCES = {*LEGAL, (S.DELIVERED, A.CONFIRM)}


def arguments(action: ManifestAction) -> dict[str, object]:
    if action is A.CONFIRM:
        return {"quantity_m3": 20.0}
    if action is A.FLAG:
        return {"reason": R.OVERDUE}
    if action is A.RESOLVE:
        return {"note": "checked with the receiver"}
    return {}


@pytest.mark.parametrize(("source", "action"), sorted(LEGAL))
def test_each_legal_action_leads_to_its_status(source, action):
    outcome = apply(manifest(source), action, at=AT, **arguments(action))  # type: ignore[arg-type]
    assert outcome.status is LEGAL[source, action]
    assert outcome.manifest.status is LEGAL[source, action]
    assert outcome.changes["status"] is LEGAL[source, action]


@pytest.mark.parametrize(
    ("source", "action"),
    [(s, a) for s in ManifestStatus for a in ManifestAction if (s, a) not in LEGAL_SOURCES],
)
def test_every_other_action_is_refused_naming_what_is_allowed(source, action):
    with pytest.raises(InvalidManifestTransition) as refused:
        apply(manifest(source), action, at=AT, **arguments(action))  # type: ignore[arg-type]
    allowed = [a for a in ManifestAction if (source, a) in LEGAL_SOURCES]
    assert refused.value.allowed == allowed
    assert refused.value.extra == {
        "status_now": source.value,
        "action": action.value,
        "allowed_actions": [a.value for a in allowed],
    }


def test_an_invalid_transition_is_a_conflict_with_a_stable_code():
    with pytest.raises(InvalidManifestTransition) as refused:
        apply(manifest(S.IN_TRANSIT), A.CANCEL, at=AT)
    assert isinstance(refused.value, Conflict)
    assert refused.value.code == "muck.invalid_manifest_transition"
    assert refused.value.status == 409
    assert refused.value.detail == (
        "cannot cancel a manifest that is in_transit; allowed from in_transit: deliver, flag"
    )


def test_a_closed_manifest_allows_nothing():
    assert allowed_actions(S.CLOSED) == []
    with pytest.raises(InvalidManifestTransition, match="allowed from closed: nothing"):
        apply(manifest(S.CLOSED), A.LOAD, at=AT)


def test_the_trip_records_one_event_per_step_with_its_time():
    loaded = apply(manifest(), A.LOAD, at=AT)
    departed = apply(loaded.manifest, A.DEPART, at=AT + timedelta(minutes=1))
    delivered = apply(departed.manifest, A.DELIVER, at=AT + timedelta(minutes=40))
    assert loaded.events == (ManifestLoaded(AT),)
    assert departed.events == (ManifestDeparted(AT + timedelta(minutes=1)),)
    assert delivered.events == (ManifestDelivered(AT + timedelta(minutes=40)),)
    assert delivered.changes == {"status": S.DELIVERED}


def test_a_confirmed_quantity_within_tolerance_confirms_and_closes_in_one_step():
    outcome = apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=19.0)
    assert outcome.status is S.CLOSED
    assert outcome.events == (ManifestConfirmed(AT, 19.0), ManifestClosed(AT))
    assert outcome.changes == {"status": S.CLOSED, "received_quantity_m3": 19.0}
    assert outcome.manifest.received_quantity_m3 == 19.0
    assert outcome.manifest.abnormal_reason is None


@pytest.mark.parametrize("received", [18.0, 22.0])
def test_a_quantity_exactly_at_the_tolerance_is_accepted(received):
    assert apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=received).status is S.CLOSED


@pytest.mark.parametrize("received", [17.9, 22.1, 5.0])
def test_a_quantity_beyond_the_tolerance_makes_the_manifest_abnormal_instead(received):
    outcome = apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=received)
    assert outcome.status is S.ABNORMAL
    assert outcome.manifest.abnormal_reason is R.QUANTITY_MISMATCH
    assert outcome.manifest.received_quantity_m3 == received
    assert outcome.events == (ManifestFlagged(AT, R.QUANTITY_MISMATCH),)
    assert outcome.changes == {
        "status": S.ABNORMAL,
        "received_quantity_m3": received,
        "abnormal_reason": R.QUANTITY_MISMATCH,
    }


def test_the_tolerance_is_the_callers_to_choose():
    strict = apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=20.5, tolerance=0.0)
    assert strict.status is S.ABNORMAL
    assert apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=20.0, tolerance=0.0).status is S.CLOSED


@pytest.mark.parametrize("tolerance", [-0.1, 1.0, float("nan")])
def test_a_tolerance_outside_0_to_1_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=20.0, tolerance=tolerance)


def test_a_confirmed_manifest_is_closed_by_close():
    confirmed = replace(manifest(S.CONFIRMED), received_quantity_m3=20.0)
    outcome = apply(confirmed, A.CLOSE, at=AT)
    assert outcome.status is S.CLOSED
    assert outcome.events == (ManifestClosed(AT),)


@pytest.mark.parametrize("reason", list(AbnormalReason))
def test_a_flag_records_its_reason(reason: AbnormalReason):
    outcome = apply(manifest(S.IN_TRANSIT), A.FLAG, at=AT, reason=reason)
    assert outcome.status is S.ABNORMAL
    assert outcome.manifest.abnormal_reason is reason
    assert outcome.changes == {"status": S.ABNORMAL, "abnormal_reason": reason}
    assert outcome.events == (ManifestFlagged(AT, reason),)


def test_a_regulator_resolves_an_abnormal_manifest_with_a_note_and_so_closes_it():
    abnormal = apply(manifest(S.IN_TRANSIT), A.FLAG, at=AT, reason=R.DELIVERED_ELSEWHERE).manifest
    outcome = apply(abnormal, A.RESOLVE, at=AT + timedelta(hours=1), note="  accepted by GZ-BY-D002  ")
    later = AT + timedelta(hours=1)
    assert outcome.status is S.CLOSED
    assert outcome.events == (ManifestResolved(later, "accepted by GZ-BY-D002"), ManifestClosed(later))
    # What went wrong stays on the record.
    assert outcome.manifest.abnormal_reason is R.DELIVERED_ELSEWHERE
    assert outcome.changes == {"status": S.CLOSED}


def test_only_an_issued_manifest_may_be_cancelled():
    outcome = apply(manifest(), A.CANCEL, at=AT)
    assert outcome.status is S.CANCELLED
    assert outcome.events == (ManifestCancelled(AT),)
    with pytest.raises(InvalidManifestTransition, match="allowed from loaded: depart, deliver, flag"):
        apply(manifest(S.LOADED), A.CANCEL, at=AT)


def test_apply_leaves_the_given_manifest_as_it_was():
    before = manifest(S.DELIVERED)
    apply(before, A.CONFIRM, at=AT, quantity_m3=30.0)
    assert before == manifest(S.DELIVERED)


@pytest.mark.parametrize("quantity", [0.0, -1.0, float("nan"), float("inf")])
def test_a_received_quantity_must_be_positive(quantity):
    with pytest.raises(ValueError, match="positive number of cubic metres"):
        apply(manifest(S.DELIVERED), A.CONFIRM, at=AT, quantity_m3=quantity)


@pytest.mark.parametrize("declared", [0.0, -5.0])
def test_a_declared_quantity_must_be_positive(declared):
    with pytest.raises(ValueError, match="declared quantity"):
        manifest(declared=declared)


def test_confirm_needs_its_quantity_and_no_other_action_takes_one():
    with pytest.raises(ValueError, match="confirm needs the quantity received"):
        apply(manifest(S.DELIVERED), A.CONFIRM, at=AT)
    with pytest.raises(ValueError, match="load takes no quantity"):
        apply(manifest(), A.LOAD, at=AT, quantity_m3=20.0)


def test_flag_needs_its_reason_and_resolve_its_note():
    with pytest.raises(ValueError, match="flag needs a reason"):
        apply(manifest(S.LOADED), A.FLAG, at=AT)
    with pytest.raises(ValueError, match="resolve needs a note"):
        apply(manifest(S.ABNORMAL), A.RESOLVE, at=AT)
    with pytest.raises(ValueError, match="blank"):
        apply(manifest(S.ABNORMAL), A.RESOLVE, at=AT, note="   ")
    with pytest.raises(ValueError, match="deliver takes no reason"):
        apply(manifest(S.IN_TRANSIT), A.DELIVER, at=AT, reason=R.OVERDUE)


def test_an_action_at_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        apply(manifest(), A.LOAD, at=datetime(2026, 12, 1, 21, 0))


OPEN = [S.ISSUED, S.LOADED, S.IN_TRANSIT, S.DELIVERED, S.CONFIRMED, S.ABNORMAL]


@pytest.mark.parametrize("status", list(ManifestStatus))
def test_a_manifest_is_open_until_closed_or_cancelled(status):
    assert is_open(status) is (status in OPEN)


@pytest.mark.parametrize("status", [S.ISSUED, S.LOADED, S.IN_TRANSIT])
def test_an_undelivered_manifest_is_overdue_from_the_end_of_its_window(status):
    assert not is_overdue(manifest(status), WINDOW_END - timedelta(seconds=1))
    assert is_overdue(manifest(status), WINDOW_END)
    assert is_overdue(manifest(status), WINDOW_END + timedelta(hours=3))


@pytest.mark.parametrize("status", [S.DELIVERED, S.CONFIRMED, S.CLOSED, S.CANCELLED, S.ABNORMAL])
def test_a_delivered_finished_or_already_flagged_manifest_is_never_overdue(status):
    assert not is_overdue(manifest(status), WINDOW_END + timedelta(days=1))


def test_overdue_is_decided_on_the_instant_whatever_the_zone():
    assert is_overdue(manifest(S.IN_TRANSIT), datetime(2026, 12, 1, 15, 30, tzinfo=UTC))  # 23:30 city time


def test_the_closure_rate_is_closed_over_due():
    assert closure_rate(95, 100) == 0.95
    assert closure_rate(100, 100) == 1.0
    assert closure_rate(0, 3) == 0.0


def test_no_manifest_due_has_no_closure_rate():
    assert closure_rate(0, 0) is None


@pytest.mark.parametrize(("closed", "due"), [(-1, 3), (1, -3), (4, 3)])
def test_impossible_counts_have_no_closure_rate(closed, due):
    with pytest.raises(ValueError, match=r"counts|closed manifests"):
        closure_rate(closed, due)
