"""The electronic manifest (电子联单) of one load as a state machine: what each action leads to and records.

issued → load (the truck leaves the site) → loaded → depart → in_transit → deliver (it enters the
designated disposal site) → delivered → confirm (the receiver states the quantity received) →
confirmed → closed. A confirmation within tolerance of the declared quantity closes the manifest in
the same step: the receiver's confirmation is what closes a correct load, and so what the 100 %
closure target counts. Anything wrong (overdue, unloaded elsewhere, a quantity that differs) makes
the manifest abnormal until a regulator resolves it, which closes it too. Only an issued manifest,
not yet loaded, may be cancelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from citygrid.errors import Conflict

# The statuses are the contract's: the events carry them as they are.
from contract.muck import ManifestStatus

__all__ = [
    "TRANSITIONS",
    "AbnormalReason",
    "InvalidManifestTransition",
    "Manifest",
    "ManifestAction",
    "ManifestCancelled",
    "ManifestClosed",
    "ManifestConfirmed",
    "ManifestDelivered",
    "ManifestDeparted",
    "ManifestEvent",
    "ManifestFlagged",
    "ManifestLoaded",
    "ManifestResolved",
    "ManifestStatus",
    "Outcome",
    "allowed_actions",
    "apply",
    "closure_rate",
    "is_open",
    "is_overdue",
]


class ManifestAction(StrEnum):
    LOAD = "load"  # the truck left the origin site: its geofence or the gate's scan
    DEPART = "depart"  # the first position outside the origin site
    DELIVER = "deliver"  # the truck entered the designated disposal site
    CONFIRM = "confirm"  # the receiver confirms, with the quantity received
    CLOSE = "close"
    FLAG = "flag"  # something is wrong: see AbnormalReason
    RESOLVE = "resolve"  # a regulator settles an abnormal manifest, with a note
    CANCEL = "cancel"


class AbnormalReason(StrEnum):
    OVERDUE = "overdue"  # not delivered by the end of its window
    DELIVERED_ELSEWHERE = "delivered_elsewhere"  # entered another disposal site while loaded
    QUANTITY_MISMATCH = "quantity_mismatch"  # received differs from declared beyond the tolerance


S = ManifestStatus
A = ManifestAction

TRANSITIONS: Final[dict[ManifestAction, tuple[frozenset[ManifestStatus], ManifestStatus]]] = {
    A.LOAD: (frozenset({S.ISSUED}), S.LOADED),
    A.DEPART: (frozenset({S.LOADED}), S.IN_TRANSIT),
    # Straight from loaded when no position was seen between the two sites (a short trip, a blind area).
    A.DELIVER: (frozenset({S.LOADED, S.IN_TRANSIT}), S.DELIVERED),
    A.CONFIRM: (frozenset({S.DELIVERED}), S.CONFIRMED),
    A.CLOSE: (frozenset({S.CONFIRMED}), S.CLOSED),
    A.FLAG: (frozenset({S.ISSUED, S.LOADED, S.IN_TRANSIT, S.DELIVERED}), S.ABNORMAL),
    A.RESOLVE: (frozenset({S.ABNORMAL}), S.CLOSED),
    A.CANCEL: (frozenset({S.ISSUED}), S.CANCELLED),
}

FINAL: Final = frozenset({S.CLOSED, S.CANCELLED})
# Where the load has not reached its receiver yet, so the window's end can still pass it by.
_UNDELIVERED: Final = frozenset({S.ISSUED, S.LOADED, S.IN_TRANSIT})


@dataclass(frozen=True)
class Manifest:
    """What the rules need of a manifest; the service builds it from its row."""

    status: ManifestStatus
    declared_quantity_m3: float
    received_quantity_m3: float | None
    window_end: datetime
    origin_site: str
    disposal_site: str
    abnormal_reason: AbnormalReason | None = None

    def __post_init__(self) -> None:
        _positive_quantity(self.declared_quantity_m3, "the declared quantity")
        _aware(self.window_end, "the window's end")


# -- events: what the service writes to the outbox, one per thing that happened ----------------------


@dataclass(frozen=True)
class ManifestLoaded:
    at: datetime


@dataclass(frozen=True)
class ManifestDeparted:
    at: datetime


@dataclass(frozen=True)
class ManifestDelivered:
    at: datetime


@dataclass(frozen=True)
class ManifestConfirmed:
    at: datetime
    received_quantity_m3: float


@dataclass(frozen=True)
class ManifestClosed:
    at: datetime


@dataclass(frozen=True)
class ManifestFlagged:
    at: datetime
    reason: AbnormalReason


@dataclass(frozen=True)
class ManifestResolved:
    at: datetime
    note: str


@dataclass(frozen=True)
class ManifestCancelled:
    at: datetime


ManifestEvent = (
    ManifestLoaded
    | ManifestDeparted
    | ManifestDelivered
    | ManifestConfirmed
    | ManifestClosed
    | ManifestFlagged
    | ManifestResolved
    | ManifestCancelled
)


@dataclass(frozen=True)
class Outcome:
    """An action's result: the manifest after it, the fields that changed, and what happened.

    ``changes`` names ``Manifest`` fields (``status`` included) with their new values, for the
    service to set on its row; ``events`` are in the order they happened.
    """

    manifest: Manifest
    changes: dict[str, object]
    events: tuple[ManifestEvent, ...]

    @property
    def status(self) -> ManifestStatus:
        return self.manifest.status


class InvalidManifestTransition(Conflict):
    """An action the manifest's status does not allow; names the actions it does allow."""

    code = "muck.invalid_manifest_transition"
    title = "Invalid manifest transition"

    def __init__(self, status: ManifestStatus, action: ManifestAction) -> None:
        self.status_now = status
        self.action = action
        self.allowed = allowed_actions(status)
        what_is_allowed = ", ".join(a.value for a in self.allowed) if self.allowed else "nothing"
        super().__init__(
            f"cannot {action.value} a manifest that is {status.value}; "
            f"allowed from {status.value}: {what_is_allowed}",
            status_now=status.value,
            action=action.value,
            allowed_actions=[a.value for a in self.allowed],
        )


def allowed_actions(status: ManifestStatus) -> list[ManifestAction]:
    """The actions that may be taken from ``status``, in the declaration order of ManifestAction."""
    return [action for action in ManifestAction if status in TRANSITIONS[action][0]]


def apply(
    manifest: Manifest,
    action: ManifestAction,
    *,
    at: datetime,
    quantity_m3: float | None = None,
    reason: AbnormalReason | None = None,
    note: str | None = None,
    tolerance: float = 0.1,
) -> Outcome:
    """The manifest after ``action`` at ``at``, or InvalidManifestTransition if its status forbids it.

    ``quantity_m3`` is the received quantity and only ``confirm`` takes it; ``reason`` only ``flag``;
    ``note`` only ``resolve``. ``tolerance`` is relative to the declared quantity: 0.1 accepts a
    received quantity within ±10 %.
    """
    _aware(at, "an action's time")
    _arguments_fit(action, quantity_m3, reason, note)
    if not 0 <= tolerance < 1 or math.isnan(tolerance):
        raise ValueError(f"a tolerance is a fraction of the declared quantity in [0, 1), not {tolerance}")
    sources, target = TRANSITIONS[action]
    if manifest.status not in sources:
        raise InvalidManifestTransition(manifest.status, action)

    status, received, abnormal_reason = target, manifest.received_quantity_m3, manifest.abnormal_reason
    events: list[ManifestEvent] = []
    if action is A.LOAD:
        events.append(ManifestLoaded(at))
    elif action is A.DEPART:
        events.append(ManifestDeparted(at))
    elif action is A.DELIVER:
        events.append(ManifestDelivered(at))
    elif action is A.CONFIRM:
        assert quantity_m3 is not None  # checked by _arguments_fit
        received = quantity_m3
        if abs(quantity_m3 - manifest.declared_quantity_m3) > tolerance * manifest.declared_quantity_m3:
            status, abnormal_reason = S.ABNORMAL, AbnormalReason.QUANTITY_MISMATCH
            events.append(ManifestFlagged(at, AbnormalReason.QUANTITY_MISMATCH))
        else:
            status = S.CLOSED
            events += [ManifestConfirmed(at, quantity_m3), ManifestClosed(at)]
    elif action is A.CLOSE:
        events.append(ManifestClosed(at))
    elif action is A.FLAG:
        assert reason is not None  # checked by _arguments_fit
        abnormal_reason = reason
        events.append(ManifestFlagged(at, reason))
    elif action is A.RESOLVE:
        assert note is not None  # checked by _arguments_fit
        # The abnormal reason stays: it is the record of what went wrong with this load.
        events += [ManifestResolved(at, note.strip()), ManifestClosed(at)]
    else:
        events.append(ManifestCancelled(at))
    after = replace(manifest, status=status, received_quantity_m3=received, abnormal_reason=abnormal_reason)
    changes: dict[str, object] = {"status": status}
    if received != manifest.received_quantity_m3:
        changes["received_quantity_m3"] = received
    if abnormal_reason != manifest.abnormal_reason:
        changes["abnormal_reason"] = abnormal_reason
    return Outcome(after, changes, tuple(events))


def is_open(status: ManifestStatus) -> bool:
    return status not in FINAL


def is_overdue(manifest: Manifest, now: datetime) -> bool:
    """Whether the window has ended on a load not yet delivered (an abnormal one is already flagged)."""
    _aware(now, "now")
    return manifest.status in _UNDELIVERED and now >= manifest.window_end


def closure_rate(closed: int, due: int) -> float | None:
    """Closed manifests over manifests due to close; None when none was due (no rate, not 100 %)."""
    if closed < 0 or due < 0:
        raise ValueError("counts cannot be negative")
    if closed > due:
        raise ValueError(f"{closed} closed out of {due} due: closed manifests are counted among the due")
    return closed / due if due else None


def _arguments_fit(
    action: ManifestAction, quantity_m3: float | None, reason: AbnormalReason | None, note: str | None
) -> None:
    if (quantity_m3 is not None) != (action is A.CONFIRM):
        raise ValueError(
            "confirm needs the quantity received"
            if action is A.CONFIRM
            else f"{action.value} takes no quantity"
        )
    if quantity_m3 is not None:
        _positive_quantity(quantity_m3, "the received quantity")
    if (reason is not None) != (action is A.FLAG):
        raise ValueError("flag needs a reason" if action is A.FLAG else f"{action.value} takes no reason")
    if (note is not None) != (action is A.RESOLVE):
        raise ValueError("resolve needs a note" if action is A.RESOLVE else f"{action.value} takes no note")
    if note is not None and not note.strip():
        raise ValueError("a regulator's note cannot be blank")


def _positive_quantity(quantity: float, what: str) -> None:
    if not quantity > 0 or math.isinf(quantity):
        raise ValueError(f"{what} must be a positive number of cubic metres, not {quantity}")


def _aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must carry its time zone")
