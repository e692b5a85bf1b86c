"""The cylinder lifecycle as a state machine driven by scans.

in_stock → fill → filled → dispatch → in_transit → deliver → at_user → recover → returned → fill …
A cylinder in stock or returned goes to inspection; a passed inspection puts it back in stock, a
failed one leaves it there until it is scrapped. Any live cylinder may be scrapped, voided (its code
withdrawn) or reported lost; a lost one found at a user is recovered. Scrapped and void are final.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class CylinderStatus(StrEnum):
    IN_STOCK = "in_stock"
    FILLED = "filled"
    IN_TRANSIT = "in_transit"
    AT_USER = "at_user"
    RETURNED = "returned"
    IN_INSPECTION = "in_inspection"
    SCRAPPED = "scrapped"
    VOID = "void"
    REPORTED_LOST = "reported_lost"


class ScanKind(StrEnum):
    FILL = "fill"
    DISPATCH = "dispatch"
    DELIVER = "deliver"
    RECOVER = "recover"
    SEND_TO_INSPECTION = "send_to_inspection"
    INSPECT = "inspect"
    SCRAP = "scrap"
    VOID = "void"
    REPORT_LOST = "report_lost"


S = CylinderStatus
TERMINAL: Final = frozenset({S.SCRAPPED, S.VOID})
LIVE: Final = frozenset(set(CylinderStatus) - TERMINAL)


@dataclass(frozen=True)
class Transition:
    """Where a scan may be taken from and where it leads.

    Only an inspection has a verdict: ``target`` is where a passed cylinder goes, ``target_if_failed``
    where a failed one goes; for every other scan ``target_if_failed`` is None.
    """

    sources: frozenset[CylinderStatus]
    target: CylinderStatus
    target_if_failed: CylinderStatus | None = None


def _t(
    sources: set[CylinderStatus] | frozenset[CylinderStatus],
    target: CylinderStatus,
    target_if_failed: CylinderStatus | None = None,
) -> Transition:
    return Transition(frozenset(sources), target, target_if_failed)


TRANSITIONS: Final[dict[ScanKind, Transition]] = {
    ScanKind.FILL: _t({S.IN_STOCK, S.RETURNED}, S.FILLED),
    ScanKind.DISPATCH: _t({S.FILLED}, S.IN_TRANSIT),
    # Straight from filled when no dispatch scan was taken (a cylinder handed over at the station).
    ScanKind.DELIVER: _t({S.IN_TRANSIT, S.FILLED}, S.AT_USER),
    ScanKind.RECOVER: _t({S.AT_USER, S.REPORTED_LOST}, S.RETURNED),
    ScanKind.SEND_TO_INSPECTION: _t({S.IN_STOCK, S.RETURNED}, S.IN_INSPECTION),
    ScanKind.INSPECT: _t({S.IN_STOCK, S.RETURNED, S.IN_INSPECTION}, S.IN_STOCK, S.IN_INSPECTION),
    ScanKind.SCRAP: _t(LIVE, S.SCRAPPED),
    ScanKind.VOID: _t(LIVE, S.VOID),
    ScanKind.REPORT_LOST: _t({S.FILLED, S.IN_TRANSIT, S.AT_USER, S.RETURNED, S.IN_STOCK}, S.REPORTED_LOST),
}


class IllegalScan(ValueError):
    """A scan that may not be taken from the cylinder's current status."""

    def __init__(self, status: CylinderStatus, kind: ScanKind) -> None:
        self.status = status
        self.kind = kind
        allowed = [k.value for k in ScanKind if k in allowed_scans(status)]
        what_is_allowed = f"only {', '.join(allowed)}" if allowed else "nothing"
        super().__init__(
            f"cannot {kind.value} a cylinder that is {status.value}; "
            f"{what_is_allowed} is allowed from {status.value}"
        )


def allowed_scans(current: CylinderStatus) -> frozenset[ScanKind]:
    return frozenset(kind for kind, transition in TRANSITIONS.items() if current in transition.sources)


def next_status(current: CylinderStatus, kind: ScanKind, *, passed: bool | None = None) -> CylinderStatus:
    """The status after the scan; an inspection needs its verdict ``passed``, no other scan has one."""
    transition = TRANSITIONS[kind]
    if current not in transition.sources:
        raise IllegalScan(current, kind)
    if transition.target_if_failed is None:
        if passed is not None:
            raise ValueError(f"a {kind.value} scan has no verdict; only an inspect scan takes passed")
        return transition.target
    if passed is None:
        raise ValueError(f"an {kind.value} scan needs its verdict: passed=True or passed=False")
    return transition.target if passed else transition.target_if_failed
