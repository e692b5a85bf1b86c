"""The alarm pipeline: confidence → region of interest → persistence → dedup → cooldown → alarm.

Pure: the caller loads the open items of one (camera, class) key, holds the key's lock, feeds the
key's observations in time order, and writes back the items this marks new or changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.vision.domain.catalogue import Gates
from services.vision.domain.geometry import Polygon, Rect, in_regions, iou

DEDUP_IOU = 0.5


class Outcome(StrEnum):
    """What became of one observation (one box of one detection). Ordered from best to worst."""

    RAISED = "raised"  # a new alarm
    MERGED = "merged"  # into an open alarm
    PERSISTING = "persisting"  # seen, not long enough yet to be an alarm
    COOLING_DOWN = "cooling_down"  # long enough, but the camera raised this class moments ago
    OUTSIDE_REGION = "outside_region"
    BELOW_CONFIDENCE = "below_confidence"


RANK = {outcome: rank for rank, outcome in enumerate(Outcome)}


def best_outcome(outcomes: Sequence[Outcome]) -> Outcome:
    return min(outcomes, key=RANK.__getitem__)


@dataclass(frozen=True)
class Observation:
    at: datetime
    confidence: float
    box: Rect
    track_id: str | None = None
    evidence: Any = None  # opaque to the pipeline: the caller's snapshot, None when there is none


@dataclass
class Item:
    """An open candidate (persisting, not yet an alarm) or an open alarm of one key."""

    id: Hashable
    is_alarm: bool
    box: Rect
    first_seen: datetime
    last_seen: datetime
    best_confidence: float
    best_box: Rect
    track_id: str | None = None
    detections: int = 1
    raised_at: datetime | None = None
    auto_dispatch: bool = False
    evidence: Any = None
    has_evidence: bool = False  # a snapshot is kept (stored earlier, or ``evidence``)
    new: bool = False
    changed: bool = False
    just_raised: bool = False


@dataclass
class KeyState:
    """What the pipeline knows of one (camera, class): its open items and its last alarm."""

    items: list[Item] = field(default_factory=list)
    last_raised_at: datetime | None = None


def _match(items: Sequence[Item], observation: Observation, window: float) -> Item | None:
    best: Item | None = None
    best_overlap = 0.0
    for item in items:
        if abs((observation.at - item.last_seen).total_seconds()) > window:
            continue
        if observation.track_id is not None and observation.track_id == item.track_id:
            return item
        overlap = iou(item.box, observation.box)
        if overlap >= DEDUP_IOU and overlap > best_overlap:
            best, best_overlap = item, overlap
    return best


def _cooling(state: KeyState, at: datetime, gates: Gates) -> bool:
    if state.last_raised_at is None:
        return False
    return abs((at - state.last_raised_at).total_seconds()) < gates.cooldown_seconds


def _try_raise(state: KeyState, item: Item, at: datetime, gates: Gates) -> Outcome:
    if (at - item.first_seen).total_seconds() < gates.min_persistence_seconds:
        return Outcome.PERSISTING
    if _cooling(state, at, gates):
        return Outcome.COOLING_DOWN
    item.is_alarm = True
    item.raised_at = at
    item.auto_dispatch = gates.auto_dispatch
    item.just_raised = True
    state.last_raised_at = at
    return Outcome.RAISED


def observe(
    state: KeyState,
    observation: Observation,
    gates: Gates,
    regions: Sequence[Polygon],
    new_id: Callable[[], Hashable],
) -> tuple[Outcome, Item | None]:
    """Run one observation through every gate; returns its outcome and the item it touched."""
    if observation.confidence < gates.min_confidence:
        return Outcome.BELOW_CONFIDENCE, None
    if not in_regions(observation.box, regions):
        return Outcome.OUTSIDE_REGION, None
    item = _match(state.items, observation, gates.dedup_window_seconds)
    if item is not None:
        item.detections += 1
        item.box = observation.box
        if observation.at > item.last_seen:
            item.last_seen = observation.at
        if observation.at < item.first_seen:
            item.first_seen = observation.at
        better = observation.confidence > item.best_confidence
        if better:
            item.best_confidence = observation.confidence
            item.best_box = observation.box
        if observation.evidence is not None and (better or not item.has_evidence):
            item.evidence = observation.evidence
            item.has_evidence = True
        if item.track_id is None:
            item.track_id = observation.track_id
        item.changed = True
        if item.is_alarm:
            return Outcome.MERGED, item
        return _try_raise(state, item, observation.at, gates), item
    item = Item(
        id=new_id(),
        is_alarm=False,
        box=observation.box,
        first_seen=observation.at,
        last_seen=observation.at,
        best_confidence=observation.confidence,
        best_box=observation.box,
        track_id=observation.track_id,
        evidence=observation.evidence,
        has_evidence=observation.evidence is not None,
        new=True,
    )
    state.items.append(item)
    return _try_raise(state, item, observation.at, gates), item


def problem_still_there(
    detections: Sequence[tuple[float, Rect]],
    alarm_box: Rect,
    gates: Gates,
    regions: Sequence[Polygon],
    overlap: float = 0.3,
) -> bool:
    """A re-check fails when a confident detection in the watched region overlaps the alarm's box."""
    return any(
        confidence >= gates.min_confidence and in_regions(box, regions) and iou(box, alarm_box) >= overlap
        for confidence, box in detections
    )
