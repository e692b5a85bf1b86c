"""Bin-side supervision rules: what an AI box or a camera saw at a drop-off point, whether it is a
violation, and whether it is a new one or the same one seen again.

One violation per point, kind and episode: an observation within the kind's dedup window of an
episode already recorded (before its start or after its last sighting) is that episode seen again,
so an overflowing bin reported every minute by the box is one violation, one case. A box's
observation below the kind's confidence is ignored; one a person (or the vision service's gates)
confirmed is not gated again. A plain deposit is a violation only outside the point's opening
hours. Smoke or fire is urgent: its case category is handled against the natural clock.

Pure: stdlib and the contract's enums; the caller finds the nearby episode and records the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from contract.waste import WasteStream, WasteViolation
from services.waste.domain.hours import DailyWindow, is_open

Severity = Literal["normal", "urgent"]


class Observed(StrEnum):
    """What a drop-off point's AI box reports."""

    MIXED_DEPOSIT = "mixed_deposit"
    BAGS_OUTSIDE_BIN = "bags_outside_bin"
    OVERFLOW = "overflow"
    UNBROKEN_FOOD_BAG = "unbroken_food_bag"
    SMOKE_OR_FIRE = "smoke_or_fire"
    # Somebody put waste in a bin: a violation only while the point is closed.
    DEPOSIT = "deposit"


# Case categories (the case service's catalogue, GB/T 30428.2 event classes).
FIRE_CATEGORY: Final = "20405"  # 火灾, urgent: natural hours
OVERFLOW_CATEGORY: Final = "20106"  # 垃圾满溢
SORTING_CATEGORY: Final = "20111"  # 垃圾分类投放不规范


@dataclass(frozen=True)
class Gate:
    """What an observation of one kind must pass, and what its violation is."""

    min_confidence: float
    dedup: timedelta
    severity: Severity
    category_code: str


GATES: Final[Mapping[WasteViolation, Gate]] = {
    WasteViolation.MIXED_DEPOSIT: Gate(0.75, timedelta(minutes=30), "normal", SORTING_CATEGORY),
    WasteViolation.BAGS_OUTSIDE_BIN: Gate(0.75, timedelta(hours=1), "normal", SORTING_CATEGORY),
    WasteViolation.OVERFLOW: Gate(0.8, timedelta(hours=2), "normal", OVERFLOW_CATEGORY),
    WasteViolation.UNBROKEN_FOOD_BAG: Gate(0.75, timedelta(minutes=30), "normal", SORTING_CATEGORY),
    # A lower bar than the rest: a missed fire costs more than a false alarm.
    WasteViolation.SMOKE_OR_FIRE: Gate(0.6, timedelta(minutes=30), "urgent", FIRE_CATEGORY),
    WasteViolation.OUTSIDE_OPENING_HOURS: Gate(0.7, timedelta(hours=1), "normal", SORTING_CATEGORY),
}

KIND_OF_OBSERVED: Final[Mapping[Observed, WasteViolation]] = {
    Observed.MIXED_DEPOSIT: WasteViolation.MIXED_DEPOSIT,
    Observed.BAGS_OUTSIDE_BIN: WasteViolation.BAGS_OUTSIDE_BIN,
    Observed.OVERFLOW: WasteViolation.OVERFLOW,
    Observed.UNBROKEN_FOOD_BAG: WasteViolation.UNBROKEN_FOOD_BAG,
    Observed.SMOKE_OR_FIRE: WasteViolation.SMOKE_OR_FIRE,
    Observed.DEPOSIT: WasteViolation.OUTSIDE_OPENING_HOURS,
}


@dataclass(frozen=True)
class Observation:
    observed: Observed
    at: datetime
    confidence: float
    # Confirmed by a person or by the vision service's own gates: no confidence gate here.
    confirmed: bool = False
    stream: WasteStream | None = None


@dataclass(frozen=True)
class Episode:
    """A violation already recorded for the same point and kind: when it started, when last seen."""

    started_at: datetime
    last_seen_at: datetime


class Verdict(StrEnum):
    NEW = "new"  # a violation to record (and to raise a case for)
    REPEAT = "repeat"  # the nearby episode seen again
    IGNORED = "ignored"  # no violation


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    kind: WasteViolation | None = None
    gate: Gate | None = None
    # Why an observation is ignored: ``below_confidence``, ``within_opening_hours``.
    reason: str | None = None


def violation_kind(observation: Observation, opening_hours: Sequence[DailyWindow]) -> WasteViolation | None:
    """The violation an observation is, if any: a deposit only when the point is closed."""
    if observation.observed is Observed.DEPOSIT and is_open(observation.at, opening_hours):
        return None
    return KIND_OF_OBSERVED[observation.observed]


def near(episode: Episode, at: datetime, dedup: timedelta) -> bool:
    """Whether ``at`` falls within ``dedup`` of the episode (before its start or after its last sighting)."""
    return episode.started_at - dedup <= at <= episode.last_seen_at + dedup


def decide(
    observation: Observation,
    opening_hours: Sequence[DailyWindow],
    nearby: Episode | None,
    gates: Mapping[WasteViolation, Gate] = GATES,
) -> Decision:
    """The verdict on one observation, given the point's opening hours and the episode of the same
    kind recorded nearest to it (``None`` when there is none within the kind's dedup window)."""
    kind = violation_kind(observation, opening_hours)
    if kind is None:
        return Decision(Verdict.IGNORED, reason="within_opening_hours")
    gate = gates[kind]
    if not observation.confirmed and observation.confidence < gate.min_confidence:
        return Decision(Verdict.IGNORED, kind, gate, reason="below_confidence")
    if nearby is not None and near(nearby, observation.at, gate.dedup):
        return Decision(Verdict.REPEAT, kind, gate)
    return Decision(Verdict.NEW, kind, gate)


def seen_again(episode: Episode, at: datetime) -> Episode:
    """The episode after another sighting at ``at`` (which may be earlier than its start)."""
    return Episode(min(episode.started_at, at), max(episode.last_seen_at, at))


def describe(kind: WasteViolation, point_name: str, stream: WasteStream | None) -> str:
    """The case's description of a violation at a point."""
    what = {
        WasteViolation.MIXED_DEPOSIT: "mixed waste deposited",
        WasteViolation.BAGS_OUTSIDE_BIN: "bags left outside the bins",
        WasteViolation.OVERFLOW: "a bin overflowing",
        WasteViolation.UNBROKEN_FOOD_BAG: "food waste deposited in its bag",
        WasteViolation.SMOKE_OR_FIRE: "smoke or fire at the bins",
        WasteViolation.OUTSIDE_OPENING_HOURS: "waste deposited outside the opening hours",
    }.get(kind, kind.value.replace("_", " "))
    bin_stream = f" ({stream.value} bin)" if stream is not None else ""
    return f"Drop-off point {point_name}: {what}{bin_stream}"
