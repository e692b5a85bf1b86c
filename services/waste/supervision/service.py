"""Recording what was seen at a drop-off point: the rules decide (``domain/supervision.py``), this
records the decision in the caller's unit of work.

Observations of one point and kind take turns (a transaction lock on the pair), so the episode one
finds nearby is the one the other recorded; the episode key ``(point, kind, start)`` is unique
anyway, so two replicas deciding on the same observation at once still record one violation. A new
violation an AI box saw is published (``waste.violation.detected``) in the same transaction: the
case service raises its case.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from citygrid.auth import Principal
from citygrid.db import UnitOfWork
from citygrid.ids import new_id
from contract.common import EvidenceRef, GeoPoint
from contract.waste import ViolationDetected, WasteStream
from services.waste.domain.hours import parse_window
from services.waste.domain.supervision import Decision, Episode, Observation, Verdict, decide, describe
from services.waste.models import Bin, BinEvent, DropOffPoint, Violation, ViolationSource
from services.waste.supervision.schemas import BatchResult, BinEventIn, BinEventResult, Outcome

LOCK_CLASS = 7_745
OUTCOME: dict[Verdict, Outcome] = {Verdict.NEW: "new", Verdict.REPEAT: "repeat", Verdict.IGNORED: "ignored"}
# What a box may send: up to a week late (a box that was offline keeps its events), not from the future.
LATEST_AHEAD = timedelta(minutes=5)
OLDEST_BEHIND = timedelta(days=7)


@dataclass
class Recorded:
    """What one observation did, and the counts the caller's metrics add once it commits."""

    decision: Decision
    violation_id: uuid.UUID | None = None


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: Counter[tuple[str, str, str]] = field(default_factory=Counter)


async def _lock(session: AsyncSession, point_code: str, kind: str) -> None:
    await session.execute(
        select(func.pg_advisory_xact_lock(LOCK_CLASS, func.hashtext(f"{point_code}:{kind}")))
    )


async def observe(
    uow: UnitOfWork,
    point: DropOffPoint,
    observation: Observation,
    source: ViolationSource,
    tally: Tally,
    *,
    snapshots: Sequence[EvidenceRef] = (),
    source_alarm: str | None = None,
) -> Recorded:
    """Decide on one observation at ``point`` and record it: a new violation, the nearby one seen
    again, or nothing."""
    session = uow.session
    hours = [parse_window(text) for text in point.opening_hours]
    probe = decide(observation, hours, None)
    if probe.verdict is Verdict.IGNORED or probe.kind is None or probe.gate is None:
        return Recorded(probe)
    kind, gate = probe.kind, probe.gate
    await _lock(session, point.code, kind.value)
    nearby = await session.scalar(
        select(Violation)
        .where(
            Violation.point_code == point.code,
            Violation.kind == kind.value,
            Violation.episode_started_at <= observation.at + gate.dedup,
            Violation.last_seen_at >= observation.at - gate.dedup,
        )
        .order_by(Violation.last_seen_at.desc())
        .limit(1)
    )
    episode = Episode(nearby.episode_started_at, nearby.last_seen_at) if nearby is not None else None
    decision = decide(observation, hours, episode)
    evidence: list[dict[str, Any]] = [ref.model_dump(mode="json") for ref in snapshots]
    if decision.verdict is Verdict.REPEAT and nearby is not None:
        await _seen_again(session, nearby.id, observation, evidence)
        return Recorded(decision, nearby.id)
    violation_id = new_id()
    stream = observation.stream.value if observation.stream is not None else None
    detail = describe(kind, point.name, observation.stream)
    created = await session.scalar(
        insert(Violation)
        .values(
            id=violation_id,
            point_code=point.code,
            district_code=point.district_code,
            kind=kind.value,
            severity=gate.severity,
            stream=stream,
            source=source.value,
            episode_started_at=observation.at,
            last_seen_at=observation.at,
            confidence=observation.confidence,
            lon=point.lon,
            lat=point.lat,
            detail=detail[:500],
            category_code=gate.category_code,
            snapshots=evidence,
            source_alarm=source_alarm,
        )
        .on_conflict_do_nothing()
        .returning(Violation.id)
    )
    if created is None:
        # Recorded a moment ago by another transaction (the same episode, or the same alarm).
        same = await session.scalar(
            select(Violation.id).where(
                (
                    (Violation.point_code == point.code)
                    & (Violation.kind == kind.value)
                    & (Violation.episode_started_at == observation.at)
                )
                | (Violation.source_alarm == source_alarm)
            )
        )
        return Recorded(Decision(Verdict.REPEAT, kind, gate), same)
    tally.violations[kind.value, gate.severity, source.value] += 1
    if source is ViolationSource.BOX:
        uow.publish(
            ViolationDetected(
                reference=str(violation_id),
                category_code=gate.category_code,
                district_code=point.district_code,
                location=GeoPoint.of(point.lon, point.lat),
                address=point.address,
                description=detail,
                detected_at=observation.at,
                kind=kind,
                point_code=point.code,
                severity=gate.severity,
                stream=observation.stream,
                episode_started_at=observation.at,
            ),
            aggregate_id=str(violation_id),
            version=1,
        )
    return Recorded(decision, violation_id)


async def _seen_again(
    session: AsyncSession, violation_id: uuid.UUID, observation: Observation, evidence: list[dict[str, Any]]
) -> None:
    values: dict[str, Any] = {
        "observations": Violation.observations + 1,
        "last_seen_at": func.greatest(Violation.last_seen_at, observation.at),
        "confidence": func.greatest(Violation.confidence, observation.confidence),
    }
    if evidence:
        values["snapshots"] = Violation.snapshots.op("||")(literal(evidence, JSONB))
    await session.execute(update(Violation).where(Violation.id == violation_id).values(**values))


def _refused(index: int, item: BinEventIn, code: str, detail: str) -> BinEventResult:
    return BinEventResult(index=index, id=item.id, outcome="refused", reason=code, detail=detail)


def _duplicate(index: int, item: BinEventIn, earlier: BinEvent | None) -> BinEventResult:
    """The answer to an event sent before, as it was the first time (when this batch knows it)."""
    return BinEventResult(
        index=index,
        id=item.id,
        outcome="duplicate",
        violation_id=earlier.violation_id if earlier is not None else None,
        reason=earlier.outcome if earlier is not None else None,
    )


async def _claim(session: AsyncSession, items: Sequence[BinEventIn]) -> set[tuple[str, str]]:
    """Claim the events not claimed before; the keys taken.

    One statement, its rows (inserted in the order listed) in the order of their key (point, id),
    before any point and kind pair is locked: batches claiming the same events wait for each other
    in that one order, and a batch judging never waits for one still claiming.
    """
    if not items:
        return set()
    rows = [
        {
            "point_code": item.point_code,
            "event_id": item.id,
            "observed": item.observed.value,
            "at": item.at,
            "confidence": item.confidence,
            "bin_rfid": item.bin_rfid,
            "outcome": "pending",
        }
        for item in sorted(items, key=lambda item: (item.point_code, item.id))
    ]
    taken = await session.execute(
        insert(BinEvent)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(BinEvent.point_code, BinEvent.event_id)
    )
    return {(point_code, event_id) for point_code, event_id in taken.all()}


async def ingest(
    uow: UnitOfWork, items: Sequence[BinEventIn], principal: Principal, tally: Tally
) -> BatchResult:
    """One batch of AI boxes' events, each judged on its own: one bad item never sinks the others.

    An event id a point's box sent before is ``duplicate`` and answered as it was the first time;
    a caller bound to a district is refused another district's point before that, so it never
    learns another district's violation. The events to judge are claimed first, all at once in
    the order of their key, then judged in the order of point, kind, time and id, which takes the
    point and kind locks in one order too: two batches never wait for each other in a circle.
    """
    session = uow.session
    now = await uow.now()
    codes = {item.point_code for item in items}
    points = {
        p.code: p for p in await session.scalars(select(DropOffPoint).where(DropOffPoint.code.in_(codes)))
    }
    bins = {b.rfid: b for b in await session.scalars(select(Bin).where(Bin.point_code.in_(codes)))}
    seen = {
        (e.point_code, e.event_id): e
        for e in await session.scalars(
            select(BinEvent).where(
                BinEvent.point_code.in_(codes), BinEvent.event_id.in_({item.id for item in items})
            )
        )
    }
    results: dict[int, BinEventResult] = {}
    order = sorted(
        range(len(items)),
        key=lambda i: (items[i].point_code, items[i].observed.value, items[i].at, items[i].id),
    )
    # The items to claim and judge, in judging order; the bin's stream each is judged with; an id
    # sent twice in the batch → the index of its first (judged) sending.
    judged: list[int] = []
    streams: dict[int, WasteStream | None] = {}
    first_sent: dict[tuple[str, str], int] = {}
    sent_again: dict[int, int] = {}
    for index in order:
        item = items[index]
        point = points.get(item.point_code)
        if point is None:
            results[index] = _refused(
                index, item, "waste.unknown_point", f"no drop-off point {item.point_code}"
            )
            continue
        if principal.district is not None and point.district_code != principal.district:
            results[index] = _refused(
                index,
                item,
                "auth.other_district",
                f"point {point.code} is not in district {principal.district}",
            )
            continue
        key = (point.code, item.id)
        if (earlier := seen.get(key)) is not None:
            results[index] = _duplicate(index, item, earlier)
            continue
        if key in first_sent:
            sent_again[index] = first_sent[key]
            continue
        if item.at > now + LATEST_AHEAD:
            results[index] = _refused(
                index, item, "waste.event_in_the_future", f"{item.at.isoformat()} is ahead"
            )
            continue
        if item.at < now - OLDEST_BEHIND:
            results[index] = _refused(
                index, item, "waste.event_too_old", "events are taken up to 7 days late"
            )
            continue
        stream = item.stream
        if item.bin_rfid is not None:
            bin_ = bins.get(item.bin_rfid)
            if bin_ is None or bin_.point_code != point.code:
                results[index] = _refused(
                    index, item, "waste.unknown_bin", f"no bin {item.bin_rfid} at point {point.code}"
                )
                continue
            stream = WasteStream(bin_.stream)
        first_sent[key] = index
        streams[index] = stream
        judged.append(index)
    # Claimed before they are judged: the same batch sent to two replicas at once waits here for
    # the first to commit, then finds the events taken and changes nothing.
    claimed = await _claim(session, [items[index] for index in judged])
    recorded_as: dict[int, BinEvent] = {}
    for index in judged:
        item = items[index]
        point = points[item.point_code]
        if (point.code, item.id) not in claimed:
            results[index] = _duplicate(index, item, None)
            continue
        observation = Observation(item.observed, item.at, item.confidence, stream=streams[index])
        recorded = await observe(uow, point, observation, ViolationSource.BOX, tally)
        outcome = OUTCOME[recorded.decision.verdict]
        await session.execute(
            update(BinEvent)
            .where(BinEvent.point_code == point.code, BinEvent.event_id == item.id)
            .values(outcome=outcome, violation_id=recorded.violation_id)
        )
        recorded_as[index] = BinEvent(outcome=outcome, violation_id=recorded.violation_id)
        results[index] = BinEventResult(
            index=index,
            id=item.id,
            outcome=outcome,
            violation_id=recorded.violation_id,
            reason=recorded.decision.reason,
        )
    # The same id twice in one batch is a duplicate too.
    for index, first in sent_again.items():
        results[index] = _duplicate(index, items[index], recorded_as.get(first))
    listed = [results[index] for index in range(len(items))]
    for result in listed:
        tally.outcomes[result.outcome] += 1
    return BatchResult(
        received=len(items), violations=sum(1 for r in listed if r.outcome == "new"), results=listed
    )
